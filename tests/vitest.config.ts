import { fileURLToPath } from 'node:url';
import { configDefaults, defineConfig } from 'vitest/config';

// Integration and end-to-end tests against real servers (tests/**). The servers are
// resolved once by the global setup (tests/harness/servers.ts); files run one at a time
// because they share those servers, and every test is bounded. tests/deploy needs no
// servers and runs with the unit tests (vitest.unit.config.ts).
const root = fileURLToPath(new URL('..', import.meta.url));

export default defineConfig({
  root,
  test: {
    include: ['tests/**/*.test.ts'],
    exclude: [...configDefaults.exclude, 'tests/deploy/**'],
    environment: 'node',
    globalSetup: [fileURLToPath(new URL('./harness/global-setup.ts', import.meta.url))],
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 90_000,
    hookTimeout: 60_000,
    teardownTimeout: 30_000,
  },
});
