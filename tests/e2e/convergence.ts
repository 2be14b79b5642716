/** Waits, bounded, until the sink has applied as many changes as the source committed. */
import { withClient } from './databases.ts';

export async function historyCount(url: string): Promise<number> {
  return withClient(url, async (client) => {
    const result = await client.query<{ n: string }>('SELECT count(*) AS n FROM change_history');
    return Number(result.rows[0]?.n ?? 0);
  });
}

export async function waitForSinkToCatchUp(options: {
  sourceUrls: readonly string[];
  sinkUrl: string;
  timeoutMs: number;
  onProgress?: (applied: number, committed: number) => void;
}): Promise<{ applied: number; committed: number; caughtUp: boolean }> {
  const deadline = Date.now() + options.timeoutMs;
  let committed = 0;
  let applied = 0;
  while (Date.now() < deadline) {
    committed = 0;
    for (const url of options.sourceUrls) committed += await historyCount(url);
    applied = await historyCount(options.sinkUrl);
    options.onProgress?.(applied, committed);
    if (applied >= committed) {
      // Settle: a duplicate application would show as applied > committed a moment later.
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      applied = await historyCount(options.sinkUrl);
      return { applied, committed, caughtUp: true };
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  return { applied, committed, caughtUp: false };
}
