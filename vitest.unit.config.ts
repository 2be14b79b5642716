import { defineConfig } from 'vitest/config';

// Unit tests: pure logic, no network. Integration and end-to-end tests live in tests/.
export default defineConfig({
  test: {
    include: ['packages/*/test/**/*.test.ts', 'apps/*/test/**/*.test.ts'],
    environment: 'node',
    testTimeout: 20_000,
  },
});
