/**
 * Environment of the lamport-reorderer. Parsed once at start-up; every bad variable is
 * named in one ConfigError.
 */
import { parseAssignment } from '@cdc/relay';
import { env, z } from '@cdc/runtime';

export const schema = z
  .object({
    PIPELINE: env.name(),
    /** Total partition count of the pipeline (the reader hashes keys over it). */
    PARTITIONS: env.requiredCount('4'),
    ASSIGNED_PARTITIONS: z.string().default('all'),
    SOURCES: env.list().refine((list) => list.length > 0, 'required: comma list of source ids, for example pg1,pg2'),
    BUFFER_MAX_EVENTS: env.positiveInt(50_000),
    BATCH_MAX: env.positiveInt(500),
    BATCH_LINGER_MS: env.positiveInt(20),
    NATS_URL: env.url(['nats', 'tls'], 'nats://127.0.0.1:4222'),
    HEALTH_PORT: env.port(8080),
    LOG_LEVEL: env.logLevel(),
    /** How often per-source ordering counters are logged; 0 = never. */
    STATS_INTERVAL_MS: z.coerce.number().int().min(0).default(30_000),
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
