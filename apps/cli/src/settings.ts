/**
 * Connection settings of the `cdc` command, checked with the apps' own field schemas
 * (`env.*` of @cdc/runtime), so a value the apps refuse is refused here with the same
 * words. Checked in one go, every bad one named by flag and variable — and never echoed:
 * commander's own invalid-argument message quotes the value, which for a URL may hold a
 * password, so URLs are not given to commander parsers.
 */
import { env, type z } from '@cdc/runtime';

export interface Setting {
  readonly flag: string;
  readonly variable: string;
  readonly value: string | undefined;
  readonly schema: z.ZodTypeAny;
}

export const SETTINGS = {
  pipeline: (value: string | undefined): Setting => ({ flag: '--pipeline', variable: 'PIPELINE', value, schema: env.name() }),
  nats: (value: string | undefined): Setting => ({ flag: '--nats', variable: 'NATS_URL', value, schema: env.natsUrl() }),
  sinkUrl: (value: string | undefined): Setting => ({ flag: '--sink-url', variable: 'SINK_DATABASE_URL', value, schema: env.url(['postgres', 'postgresql'], 'postgres://user:pass@host:5432/sink') }),
  sinkName: (value: string | undefined): Setting => ({ flag: '--sink-name', variable: 'SINK_NAME', value, schema: env.name() }),
  sourceUrl: (value: string | undefined): Setting => ({ flag: '--source-url', variable: 'SOURCE_DATABASE_URL', value, schema: env.url(['postgres', 'postgresql'], 'postgres://user:pass@host:5432/source') }),
} as const;

export class SettingsError extends Error {
  override readonly name = 'SettingsError';
  readonly code = 'CLI_BAD_SETTINGS';
  readonly retriable = false;

  constructor(readonly problems: readonly { readonly setting: string; readonly problem: string }[]) {
    super(`bad settings: ${problems.map((p) => `${p.setting}: ${p.problem}`).join('; ')}`);
  }
}

/** Throws a SettingsError naming every setting its schema refuses (values not shown). */
export function checkSettings(settings: readonly Setting[]): void {
  const problems: { setting: string; problem: string }[] = [];
  for (const setting of settings) {
    const result = setting.schema.safeParse(setting.value);
    if (!result.success) problems.push({ setting: `${setting.flag} (${setting.variable})`, problem: result.error.issues.map((issue) => issue.message).join(', ') });
  }
  if (problems.length > 0) throw new SettingsError(problems);
}
