/**
 * Environment of the dedup-gate: the relay-app base (@cdc/relay relayConfigBase) plus
 * Redis and the dedup window. Parsed once at start-up; every bad variable is named in
 * one ConfigError; defaults come from the packages that own them.
 */
import { DEDUP_DEFAULTS } from '@cdc/dedup';
import { relayConfigSchema } from '@cdc/relay';
import { env, redisSecurityFields, type z } from '@cdc/runtime';

export const schema = relayConfigSchema({
  REDIS_URL: env.url(['redis', 'rediss'], 'redis://127.0.0.1:6379'),
  ...redisSecurityFields,
  /**
   * How long an eventId stays claimed (default 10 min = @cdc/dedup DEDUP_DEFAULTS.windowMs: ~330 MB of Redis
   * at a sustained 20k events/s); older replays are absorbed by the sink's version guard.
   */
  DEDUP_WINDOW_MS: env.positiveInt(DEDUP_DEFAULTS.windowMs),
});

export type Config = z.output<typeof schema>;
