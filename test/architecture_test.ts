// Imports flow one way: main.ts -> server/ -> engine/ -> kernels/. server/ reaches engine/ only through
// engine/mod.ts, engine/ reaches kernels/ only through kernels/mod.ts, and kernels/ imports nothing of ours.
import assert from "node:assert/strict";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const LAYERS = ["kernels", "engine", "server"] as const;

async function* sources(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory && !e.name.startsWith(".") && e.name !== "node_modules") yield* sources(p);
    else if (e.isFile && /\.ts$/.test(e.name)) yield p;
  }
}

function importsOf(text: string): string[] {
  const out: string[] = [];
  const re =
    /(?:import|export)\s[^"']*?from\s+["']([^"']+)["']|import\s*\(\s*["']([^"']+)["']\s*\)|new URL\(\s*["'](\.[^"']+\.ts)["']/g;
  for (const m of text.matchAll(re)) out.push(m[1] ?? m[2] ?? m[3]);
  return out;
}

function layerOf(rel: string): string {
  const top = rel.split("/")[0];
  return (LAYERS as readonly string[]).includes(top) ? top : top === "main.ts" ? "main" : "other";
}

Deno.test("imports flow main -> server -> engine -> kernels through mod.ts", async () => {
  const problems: string[] = [];
  for await (const file of sources(root)) {
    const rel = relative(root, file);
    if (rel.startsWith("test/") || /_test\.ts$/.test(rel) || rel.startsWith("bench/")) continue;
    const from = layerOf(rel);
    for (const spec of importsOf(await Deno.readTextFile(file))) {
      if (!spec.startsWith(".")) continue;
      const target = relative(root, resolve(dirname(file), spec));
      const to = layerOf(target);
      if (from === to) continue;
      const edge = `${rel} imports ${target}`;
      if (from === "kernels") problems.push(`${edge}: kernels/ must not import outside kernels/`);
      else if (from === "engine" && to === "kernels" && target !== "kernels/mod.ts") {
        problems.push(`${edge}: engine/ must import kernels/ only through kernels/mod.ts`);
      } else if (from === "engine" && to !== "kernels") {
        problems.push(`${edge}: engine/ may only import kernels/`);
      } else if (from === "server" && to === "engine" && target !== "engine/mod.ts") {
        problems.push(`${edge}: server/ must import engine/ only through engine/mod.ts`);
      } else if (from === "server" && to !== "engine") {
        problems.push(`${edge}: server/ may only import engine/`);
      } else if (to === "server" && from !== "main") {
        problems.push(`${edge}: only main.ts and tests import server/`);
      }
    }
  }
  assert.deepEqual(problems, []);
});
