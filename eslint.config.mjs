// Flat ESLint config: the layout and promise rules the type checker cannot see.
//   pnpm lint   (scripts/test.sh runs it as its `lint` step, so CI does too)
// Only rules that guard the structure are on; style is left to tsc and review.
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';

export default defineConfig(
  {
    ignores: ['**/node_modules/**', '**/dist/**', 'bench/results/**', '.state/**'],
  },
  {
    files: [
      'packages/*/src/**/*.ts',
      'packages/*/test/**/*.ts',
      'apps/*/src/**/*.ts',
      'tests/**/*.ts',
      'bench/**/*.ts',
    ],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: {
        // Type information from the root tsconfig.json, which includes every file above.
        projectService: true,
        tsconfigRootDir: import.meta.dirname,
      },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    plugins: {
      '@typescript-eslint': tseslint.plugin,
      'import-x': importX,
    },
    settings: {
      'import-x/extensions': ['.ts'],
      // Workspace packages are ours: no-cycle follows them (ignoreExternal skips only npm's).
      'import-x/internal-regex': '^@cdc/',
      'import-x/resolver-next': [importX.createNodeResolver({ extensions: ['.ts', '.js'] })],
    },
    rules: {
      // A promise nobody awaits loses its error and its ordering.
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      // `import type` for types only (verbatimModuleSyntax keeps the rest at run time).
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'separate-type-imports' }],
      // Dependencies go one way (STYLE 3).
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      // vitest reads fixture dependencies from a destructuring, even an empty one: the one
      // place that needs `({}, use)` says so with a disable comment.
      'no-empty-pattern': 'error',
      // One public door per package (STYLE 2): nothing imports `@cdc/<pkg>/src/...` or a
      // relative path into packages/ or apps/; an app publishes what tests read of it as
      // an `exports` subpath (`@cdc/app-reader/config`).
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^@cdc/[^/]+/src(/|$)',
              message: "Import the package's index (`@cdc/<pkg>`) or a subpath its `exports` publish, not a file inside it.",
            },
            {
              regex: '^(\\.\\./)+(packages|apps)/',
              message: "Import the package's index (`@cdc/<pkg>`) or a subpath its `exports` publish, not a file inside it.",
            },
          ],
        },
      ],
    },
  },
  {
    // The same for any other relative path into a sibling package (`../../committer/test/x.ts`).
    // Not for bench/: the repository's own benchmark reuses the integration harness in tests/
    // (a test folder, not a library) by path; it is still held to the patterns above.
    files: ['packages/*/src/**/*.ts', 'packages/*/test/**/*.ts', 'apps/*/src/**/*.ts', 'tests/**/*.ts'],
    rules: { 'import-x/no-relative-packages': 'error' },
  },
);
