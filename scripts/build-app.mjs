// Bundles one app (and the workspace packages it imports) into dist/main.js with esbuild.
// Third-party packages stay external: they are installed next to the bundle
// (`pnpm deploy --prod` in the Dockerfile), which keeps native and dynamic requires intact.
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const appDir = resolve(process.argv[2] ?? '.');
const manifest = JSON.parse(readFileSync(join(appDir, 'package.json'), 'utf8'));
const thirdParty = new Set();
const collect = (dir) => {
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  for (const [name, version] of Object.entries(pkg.dependencies ?? {})) {
    if (String(version).startsWith('workspace:')) collect(join(appDir, 'node_modules', name));
    else thirdParty.add(name);
  }
};
collect(appDir);

await build({
  entryPoints: [join(appDir, 'src/main.ts')],
  outfile: join(appDir, 'dist/main.js'),
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node22',
  sourcemap: true,
  external: [...thirdParty, ...[...thirdParty].map((name) => `${name}/*`)],
  banner: { js: "import { createRequire as __cdcCreateRequire } from 'node:module'; const require = __cdcCreateRequire(import.meta.url);" },
  logLevel: 'warning',
});
console.log(`built ${manifest.name} → ${join(appDir, 'dist/main.js')}`);
