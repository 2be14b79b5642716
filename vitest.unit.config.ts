import { defineConfig } from 'vitest/config';

// Unit tests: pure logic, no network. Integration and end-to-end tests live in tests/,
// except tests/deploy (the deployment files, checked by parsing: no servers).
export default defineConfig({
  test: {
    include: ['packages/*/test/**/*.test.ts', 'apps/*/test/**/*.test.ts', 'tests/deploy/**/*.test.ts'],
    environment: 'node',
    testTimeout: 20_000,
  },
});
