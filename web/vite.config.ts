import { defineConfig } from "vite";

// The gateway serves `dist/` at `/`: hashed files under `/static/` (cached for a year),
// `index.html` for every client route. `npm run dev` proxies the API to a local gateway.
export default defineConfig({
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    outDir: "dist",
    assetsDir: "static",
    target: "es2022",
    sourcemap: false,
    emptyOutDir: true,
  },
  server: {
    proxy: { "/api": { target: "http://127.0.0.1:8080", changeOrigin: false } },
  },
});
