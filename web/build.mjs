// Builds web/dist/: index.html, app.js (esbuild bundle of src/main.js with mediasoup-client and
// socket.io-client), style.css, favicon.svg. Usage: node build.mjs [--dev] (--dev: no minify).
import { build } from 'esbuild';
import { copyFile, mkdir, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, 'src');
const dist = join(here, 'dist');
const dev = process.argv.includes('--dev');

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });
const result = await build({
  entryPoints: [join(src, 'main.js')],
  bundle: true,
  format: 'iife',
  target: ['chrome111', 'firefox120', 'safari16'],
  platform: 'browser',
  minify: !dev,
  sourcemap: 'linked',
  legalComments: 'linked',
  outfile: join(dist, 'app.js'),
  define: { 'process.env.NODE_ENV': dev ? '"development"' : '"production"' },
  logLevel: 'warning',
  metafile: true,
});
for (const name of ['index.html', 'style.css', 'favicon.svg']) await copyFile(join(src, name), join(dist, name));
const size = (await stat(join(dist, 'app.js'))).size;
console.log(`web/dist/app.js: ${(size / 1024).toFixed(0)} KiB (${Object.keys(result.metafile.inputs).length} inputs)`);
