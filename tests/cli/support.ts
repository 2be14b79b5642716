/** Runs the `cdc` command (apps/cli, from its sources under tsx) with `env` over the test's environment. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../harness/servers.ts';

const run = promisify(execFile);

export async function cdc(args: readonly string[], env: Record<string, string>): Promise<{ stdout: string; code: number }> {
  try {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', 'apps/cli/src/main.ts', ...args], { cwd: REPO_ROOT, env: { ...process.env, ...env }, timeout: 60_000 });
    return { stdout, code: 0 };
  } catch (error) {
    const failed = error as { stdout?: string; stderr?: string; code?: number };
    return { stdout: `${failed.stdout ?? ''}${failed.stderr ?? ''}`, code: typeof failed.code === 'number' ? failed.code : 1 };
  }
}
