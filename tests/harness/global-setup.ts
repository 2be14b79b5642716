/**
 * vitest global setup for tests/: resolves the servers ONCE per run (see servers.ts),
 * checks each one accepts connections, and provides the URLs to every test file.
 */
import type { TestProject } from 'vitest/node';
import './provided.ts';
import { assertReachable, resolveServers } from './servers.ts';

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const started = Date.now();
  const resolved = await resolveServers({ log: (message) => console.log(`[harness] ${message}`) });
  try {
    await assertReachable(resolved.urls);
  } catch (error) {
    await resolved.stop();
    throw error;
  }
  console.log(`[harness] servers (${resolved.source}) ready in ${Date.now() - started} ms`);
  project.provide('servers', resolved.urls);
  return async () => {
    await resolved.stop();
  };
}
