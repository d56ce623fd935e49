// The import rules of docs/ARCHITECTURE.md, checked on the real module graph: `deno info --json` from every
// program entry (main.ts, each cli/ program, the engine Worker) lists what is actually imported, type-only
// imports included. Imports flow one way, main.ts and cli/ -> server/ -> engine/ -> kernels/, with text/ and
// grammar/ leaves beside engine/; outside its own folder a layer is reached only through its mod.ts; no cycles.
import assert from "node:assert/strict";
import { relative } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** For each layer, the modules of other layers it may import. main.ts and cli/ are composition roots. */
const ALLOWED: Record<string, readonly string[]> = {
  main: ["server/*", "engine/mod.ts", "text/mod.ts", "grammar/mod.ts"],
  cli: ["engine/mod.ts", "text/mod.ts"],
  server: ["engine/mod.ts", "text/mod.ts", "grammar/mod.ts"],
  engine: ["kernels/mod.ts"],
  text: [],
  grammar: [],
  kernels: [],
};

/** Files every import is read from: the programs, and the Workers (started by URL, not imported). */
function entries(): string[] {
  const cli = [...Deno.readDirSync(`${ROOT}cli`)]
    .filter((e) => e.isFile && e.name.endsWith(".ts") && !e.name.endsWith("_test.ts"))
    .map((e) => `cli/${e.name}`);
  return ["main.ts", ...cli.sort(), "engine/worker.ts", "grammar/worker.ts"];
}

interface InfoModule {
  specifier: string;
  dependencies?: { code?: { specifier: string }; type?: { specifier: string } }[];
}

/** Local module -> the local modules it imports (code and type imports), as paths from the repository root. */
async function importGraph(entry: string): Promise<Map<string, Set<string>>> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`deno info ${entry} failed: ${new TextDecoder().decode(out.stderr)}`);
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as { modules: InfoModule[] };
  const local = (specifier: string) =>
    specifier.startsWith("file://") ? relative(ROOT, fileURLToPath(specifier)) : null;
  const graph = new Map<string, Set<string>>();
  for (const m of info.modules) {
    const from = local(m.specifier);
    if (from === null) continue;
    const to = new Set<string>();
    for (const d of m.dependencies ?? []) {
      for (const target of [d.code?.specifier, d.type?.specifier]) {
        const path = target === undefined ? null : local(target);
        if (path !== null && /\.ts$/.test(path)) to.add(path);
      }
    }
    graph.set(from, to);
  }
  return graph;
}

function layerOf(path: string): string {
  if (path === "main.ts") return "main";
  const top = path.split("/")[0];
  return top in ALLOWED ? top : `outside (${top})`;
}

/** Why the edge `from -> to` breaks the rules, or null when it keeps them. */
export function edgeProblem(from: string, to: string): string | null {
  const a = layerOf(from);
  const b = layerOf(to);
  if (a === b) return null;
  const allowed = ALLOWED[a] ?? [];
  const ok = allowed.some((p) => p.endsWith("/*") ? to.startsWith(p.slice(0, -1)) : p === to);
  if (ok) return null;
  const may = allowed.length ? `may import only ${allowed.join(", ")}` : "may import nothing outside itself";
  return `${from} imports ${to}: ${a === "main" ? "main.ts" : `${a}/`} ${may}`;
}

/** Each import cycle once, as the path that closes it. */
export function cycles(graph: Map<string, Set<string>>): string[][] {
  const found: string[][] = [];
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (node: string) => {
    state.set(node, "open");
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      if (state.get(next) === "open") found.push([...stack.slice(stack.indexOf(next)), next]);
      else if (!state.has(next)) visit(next);
    }
    stack.pop();
    state.set(node, "done");
  };
  for (const node of [...graph.keys()].sort()) if (!state.has(node)) visit(node);
  return found;
}

Deno.test("edgeProblem() and cycles() catch what the architecture test is for", () => {
  assert.equal(edgeProblem("server/app.ts", "engine/mod.ts"), null);
  assert.equal(edgeProblem("main.ts", "server/app.ts"), null);
  assert.match(edgeProblem("server/sequence.ts", "engine/engine.ts")!, /server\/ may import only/);
  assert.match(
    edgeProblem("engine/engine.ts", "server/errors.ts")!,
    /engine\/ may import only kernels\/mod.ts/,
  );
  assert.match(edgeProblem("engine/runner.ts", "text/mod.ts")!, /engine\//);
  assert.match(edgeProblem("text/tokenizer.ts", "engine/mod.ts")!, /text\/ may import nothing/);
  assert.match(edgeProblem("grammar/pool.ts", "engine/constraint.ts")!, /grammar\/ may import nothing/);
  assert.match(edgeProblem("engine/runner.ts", "grammar/mod.ts")!, /engine\/ may import only/);
  assert.match(edgeProblem("kernels/core.ts", "test/support/mod.ts")!, /kernels\/ may import nothing/);
  const g = new Map([["a.ts", new Set(["b.ts"])], ["b.ts", new Set(["c.ts"])], ["c.ts", new Set(["a.ts"])]]);
  assert.deepEqual(cycles(g), [["a.ts", "b.ts", "c.ts", "a.ts"]]);
  assert.deepEqual(cycles(new Map([["a.ts", new Set(["b.ts"])], ["b.ts", new Set<string>()]])), []);
});

Deno.test("imports flow main.ts, cli/ -> server/ -> engine/ -> kernels/ (text/, grammar/ beside engine/), through mod.ts, without cycles", async () => {
  const graph = new Map<string, Set<string>>();
  for (const entry of entries()) {
    for (const [from, to] of await importGraph(entry)) {
      graph.set(from, new Set([...(graph.get(from) ?? []), ...to]));
    }
  }
  assert.ok(graph.has("server/app.ts") && graph.has("kernels/core.ts"), "the graph reaches every layer");
  const problems: string[] = [];
  for (const [from, to] of graph) {
    for (const target of to) {
      const p = edgeProblem(from, target);
      if (p) problems.push(p);
    }
  }
  for (const cycle of cycles(graph)) problems.push(`import cycle: ${cycle.join(" -> ")}`);
  assert.deepEqual(problems, []);
});
