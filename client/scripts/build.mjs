// Builds dist/rheomesh.js (one ESM bundle, no dependencies) and dist/rheomesh.d.ts.
import { execFileSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { build } from "esbuild";

rmSync("dist", { recursive: true, force: true });
await build({
  entryPoints: ["src/index.ts"],
  outfile: "dist/rheomesh.js",
  bundle: true,
  format: "esm",
  target: "es2020",
  platform: "browser",
  legalComments: "none",
  logLevel: "warning",
});
execFileSync(process.execPath, ["node_modules/typescript/bin/tsc", "-p", "tsconfig.json", "--emitDeclarationOnly"], {
  stdio: "inherit",
});
writeFileSync("dist/rheomesh.d.ts", 'export * from "./types/index.js";\n');
