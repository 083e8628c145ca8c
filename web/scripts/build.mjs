// `npm run build`: regenerates src/gen from the .proto files, bundles
// src/main.ts into dist/app.js (minified, with a source map) and copies the
// static files. The Rust web server serves dist/.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const web = resolve(dirname(fileURLToPath(import.meta.url)), "..");
execFileSync(process.execPath, [join(web, "scripts/gen.mjs")], { stdio: "inherit" });

const dist = join(web, "dist");
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
const result = await esbuild.build({
  entryPoints: [join(web, "src/main.ts")],
  outfile: join(dist, "app.js"),
  bundle: true,
  format: "esm",
  target: "es2022",
  platform: "browser",
  sourcemap: true,
  minify: true,
  metafile: true,
  logLevel: "warning",
});
for (const f of ["index.html", "styles.css"]) copyFileSync(join(web, f), join(dist, f));
const bytes = result.metafile.outputs["dist/app.js"]?.bytes ?? 0;
console.log(`build: dist/app.js ${(bytes / 1024).toFixed(1)} KiB, index.html, styles.css`);
