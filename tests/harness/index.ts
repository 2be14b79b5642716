/**
 * The shared harness for integration and end-to-end tests: ONE server resolver
 * (servers.ts, run once by global-setup.ts), a per-test context with connections and
 * cleanup (context.ts), unique names, bounded waits, process fault helpers and a TCP proxy
 * a test can cut (proxy.ts).
 */
export { test, TestContext, createTestContext } from './context.ts';
export type { NatsHandles } from './context.ts';
export { expect, describe } from 'vitest';
export { uniqueName } from './names.ts';
export { waitFor, withTimeout, WaitTimeoutError } from './wait.ts';
export type { WaitOptions } from './wait.ts';
export { ManagedProcess, spawnApp } from './process.ts';
export { TcpProxy } from './proxy.ts';
export type { ProcessOptions, ExitStatus, LineMatch } from './process.ts';
export {
  resolveServers,
  serverEnv,
  serversFromEnv,
  parseEnvFile,
  assertReachable,
  REPO_ROOT,
  SERVER_ENV_VARS,
} from './servers.ts';
export type { ServerUrls, ServersSource, ResolvedServers, ServerEnvVar } from './servers.ts';
