// Three builds of one source: ESM and CommonJS for bundlers and Node (each with its own
// declaration file, so `import` and `require` resolve to types of the matching module kind), and
// a minified script-tag build that defines the global `Herald`.
import { copyFileSync } from 'node:fs';
import { defineConfig } from 'tsup';

export default defineConfig([
  {
    entry: { index: 'src/index.ts', msgpack: 'src/msgpack.ts', fallback: 'src/fallback.ts', react: 'src/react.ts' },
    external: ['react'],
    format: ['esm', 'cjs'],
    target: 'es2022',
    platform: 'neutral',
    dts: true,
    sourcemap: true,
    clean: false,
    treeshake: true,
  },
  {
    entry: { herald: 'src/global.ts' },
    format: ['iife'],
    globalName: 'Herald',
    target: 'es2020',
    platform: 'browser',
    minify: true,
    sourcemap: true,
    // The global's types: `declare const Herald: typeof import('./index.js')`.
    onSuccess: async () => copyFileSync('types/herald.global.d.ts', 'dist/herald.global.d.ts'),
  },
]);
