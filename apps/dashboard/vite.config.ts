import { defineConfig } from 'vite';

// Static files only: the query API serves dist/ at `/` (same origin, so no CORS and no API URL to configure).
// `base: './'` keeps every asset URL relative, so the files also work when mounted under another path.
export default defineConfig({
  root: import.meta.dirname,
  base: './',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: true,
    chunkSizeWarningLimit: 200,
    rollupOptions: {
      // zod (the query API's contract) marks some initializers pure in comments Rollup cannot place; it drops them.
      onwarn(warning, warn) {
        if (warning.code === 'INVALID_ANNOTATION' && warning.id?.includes('/node_modules/zod/')) return;
        warn(warning);
      },
    },
  },
  server: {
    // `npm run dev -w @tally/dashboard` with a query API on 7402: the API calls go to it.
    proxy: { '/v1': 'http://127.0.0.1:7402' },
  },
});
