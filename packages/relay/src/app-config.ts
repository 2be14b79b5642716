/**
 * The environment every relay-stage app shares (lamport-reorderer, dedup-gate): one
 * schema base, extended by each app with its own variables, parsed once at start-up.
 * `ASSIGNED_PARTITIONS` ('all' or a comma list) becomes `partitions`.
 */
import { env, natsSecurityFields, z } from '@cdc/runtime';
import { parseAssignment } from './assignment.ts';
import { RELAY_DEFAULTS } from './defaults.ts';

export const relayConfigBase = {
  PIPELINE: env.name(),
  /** Total partition count of the pipeline (the reader hashes keys over it). */
  PARTITIONS: env.partitions(),
  ASSIGNED_PARTITIONS: z.string().default('all'),
  BATCH_MAX: env.positiveInt(RELAY_DEFAULTS.batchMax),
  BATCH_LINGER_MS: env.positiveInt(RELAY_DEFAULTS.batchLingerMs),
  NATS_URL: env.natsUrl(),
  ...natsSecurityFields,
  HEALTH_PORT: env.healthPort(),
  HEALTH_HOST: env.healthHost(),
  LOG_LEVEL: env.logLevel(),
  /** /readyz fails once a partition has been failing for this long. */
  READY_MAX_FAILING_MS: env.positiveInt(RELAY_DEFAULTS.readyMaxFailingMs),
};

type RelayConfigShape = typeof relayConfigBase;

/** What runRelayApp reads from any relay app's compiled config. */
export type RelayAppConfig = z.output<z.ZodObject<RelayConfigShape>> & { readonly partitions: readonly number[] };

/** The base plus an app's own variables, with the assignment expanded. */
export function relayConfigSchema<Extra extends z.ZodRawShape>(extra: Extra) {
  return z
    .object({ ...relayConfigBase, ...extra })
    .transform((config, ctx) => {
      const assignment = parseAssignment(config.ASSIGNED_PARTITIONS as string, config.PARTITIONS as number);
      if ('problem' in assignment) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['ASSIGNED_PARTITIONS'], message: assignment.problem });
        return z.NEVER;
      }
      return { ...config, partitions: assignment.partitions };
    });
}
