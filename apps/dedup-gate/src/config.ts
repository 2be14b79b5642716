/**
 * Environment of the dedup-gate. Parsed once at start-up; every bad variable is named
 * in one ConfigError.
 */
import { parseAssignment } from '@cdc/relay';
import { env, z } from '@cdc/runtime';

export const schema = z
  .object({
    PIPELINE: env.name(),
    /** Total partition count of the pipeline. */
    PARTITIONS: env.requiredCount('4'),
    ASSIGNED_PARTITIONS: z.string().default('all'),
    REDIS_URL: env.url(['redis', 'rediss'], 'redis://127.0.0.1:6379'),
    /**
     * How long an eventId stays claimed (default 10 min = @cdc/dedup DEDUP_DEFAULTS.windowMs: ~330 MB of Redis
     * at a sustained 20k events/s); older replays are absorbed by the sink's version guard.
     */
    DEDUP_WINDOW_MS: env.positiveInt(600_000),
    BATCH_MAX: env.positiveInt(500),
    BATCH_LINGER_MS: env.positiveInt(20),
    NATS_URL: env.url(['nats', 'tls'], 'nats://127.0.0.1:4222'),
    HEALTH_PORT: env.port(8080),
    LOG_LEVEL: env.logLevel(),
    /** /readyz fails once a partition has been failing for this long. */
    READY_MAX_FAILING_MS: env.positiveInt(30_000),
  })
  .transform((config, ctx) => {
    const assignment = parseAssignment(config.ASSIGNED_PARTITIONS, config.PARTITIONS);
    if ('problem' in assignment) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['ASSIGNED_PARTITIONS'], message: assignment.problem });
      return z.NEVER;
    }
    return { ...config, partitions: assignment.partitions };
  });

export type Config = z.output<typeof schema>;
