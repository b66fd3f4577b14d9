// ESM and CommonJS builds of one source, each with its own declaration file, so `import` and
// `require` resolve to types of the matching module kind.
import { defineConfig } from 'tsup';

export default defineConfig({
  entry: { index: 'src/index.ts' },
  format: ['esm', 'cjs'],
  target: 'node18',
  platform: 'node',
  dts: true,
  sourcemap: true,
  clean: false,
  treeshake: true,
  // Loaded only when a Redis publisher is created, and only from the application's own install.
  external: ['redis'],
});
