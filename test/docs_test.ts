// The docs stay true to the tree: every file docs/ARCHITECTURE.md names exists, and every section of
// docs/API.md that a code comment cites ("docs/API.md §5.3") is a heading there.
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const TOP = [
  "main.ts",
  "cli/",
  "server/",
  "text/",
  "grammar/",
  "engine/",
  "kernels/",
  "models/",
  "test/",
  "docs/",
  "bench/",
];

function exists(path: string): boolean {
  try {
    Deno.statSync(`${ROOT}${path}`);
    return true;
  } catch {
    return false;
  }
}

Deno.test("docs/ARCHITECTURE.md names only files and folders that exist", () => {
  const text = Deno.readTextFileSync(`${ROOT}docs/ARCHITECTURE.md`);
  const named = [...text.matchAll(/`([\w./<>-]+)`/g)].map((m) => m[1])
    .filter((p) => TOP.some((t) => p === t || p.startsWith(t)) && !p.includes("<"));
  assert.ok(named.length > 40, `only ${named.length} paths found`);
  assert.deepEqual(named.filter((p) => !exists(p)), []);
});

Deno.test("every docs/API.md section a comment cites is there", async () => {
  const headings = new Set(
    [...Deno.readTextFileSync(`${ROOT}docs/API.md`).matchAll(/^#{2,3} (\d+(?:\.\d+)?)\.? /gm)].map((m) =>
      m[1]
    ),
  );
  const missing: string[] = [];
  for (const dir of ["server", "engine", "text", "cli"]) {
    for await (const e of Deno.readDir(`${ROOT}${dir}`)) {
      if (!e.isFile) continue;
      const src = await Deno.readTextFile(`${ROOT}${dir}/${e.name}`);
      for (const m of src.matchAll(/docs\/API\.md §(\d+(?:\.\d+)?)/g)) {
        if (!headings.has(m[1])) missing.push(`${dir}/${e.name}: §${m[1]}`);
      }
    }
  }
  for await (const e of Deno.readDir(`${ROOT}server/routes`)) {
    const src = await Deno.readTextFile(`${ROOT}server/routes/${e.name}`);
    for (const m of src.matchAll(/docs\/API\.md §(\d+(?:\.\d+)?)/g)) {
      if (!headings.has(m[1])) missing.push(`server/routes/${e.name}: §${m[1]}`);
    }
  }
  assert.deepEqual(missing, []);
});

Deno.test("README.md tells a new user what deno task ok costs and prints, and how to pass API keys", () => {
  const text = Deno.readTextFileSync(`${ROOT}README.md`);
  // A measured duration with the machine it was measured on, and the test count.
  assert.match(text, /`deno task ok` takes about \d+ minutes? [^.]*on a 2-core machine/);
  assert.match(text, /\d{3} tests/);
  // The "XDG_RUNTIME_DIR is invalid or not set" lines are explained as harmless.
  assert.match(text, /XDG_RUNTIME_DIR is invalid or not set[^.]*harmless/s);
  assert.match(text, /`TRELLIS_API_KEY=[^`]*` rather than `--api-key`/);
});
