// `deno task bench <kernels|decode|prefill|batch|all> [flags]`: runs the benchmarks of docs/BENCHMARKS.md,
// prints one table per benchmark and writes the rows with the machine's description as JSON under
// bench/results/. `--quick` shrinks every size so the whole set runs on lavapipe in a few minutes.
import { join } from "node:path";
import { describeGpu, openGpu } from "../engine/gpu.ts";
import { ARCH_NAMES, type ArchName, type SynthCode } from "./synth.ts";
import {
  type KernelCode,
  LLAMA_SHAPES,
  QTIP_SWEEP,
  QTIP_TILE_SWEEP,
  type QtipPath,
  QUICK_SHAPES,
  runKernelsBench,
} from "./kernels_bench.ts";
import { type ModelSpec, runBatch, runDecode, runPrefill, synthModelDir } from "./model_bench.ts";
import type { TimerMethod } from "./_timing.ts";

const BENCHES = ["kernels", "decode", "prefill", "batch"] as const;
type Bench = (typeof BENCHES)[number];

const USAGE = `Usage: deno task bench <${BENCHES.join("|")}|all> [flags]
  --quick              small shapes and models (lavapipe); default: the real Llama shapes
  --arch A[,B]         ${ARCH_NAMES.join(", ")} (default llama2-7b; quick: tiny)
  --code C[,D]         HYB, 1MAD, 3INST (kernels also F16; default kernels: all, models: HYB)
  --bits B[,C]         2, 3, 4 (default kernels: 2,3,4; models: 2)
  --layers N           truncate synthetic models to N layers (results say so)
  --shapes MxN[,..]    kernels: out x in shapes (default the Llama list; quick: small)
  --tokens N[,M]       kernels: rows of x, one run per value (default 1)
  --sweep              kernels: try every QTIP matvec tuning (workgroup, LUT copies, unroll, subgroups)
  --paths P[,Q]        kernels: QTIP paths per batch, auto, tiled, matvec (default auto)
  --tile-sweep         kernels: try every tiled-matmul block (rows, tokens, columns per step; path tiled)
  --timer T            kernels: timestamp or wall (default timestamp when the device has it)
  --prompt N --gen N   decode/batch: prompt and generated tokens (default 128 / 512; batch 128 / 128)
  --lengths P[,Q]      prefill prompt lengths (default 512,2048,8192)
  --sequences S[,T]    batch sizes (default 1,4,16,64,256)
  --round-steps N      decode steps per host readback (default 16, the engine's)
  --max-batch-tokens N prefill chunk (default 2048, the engine's)
  --trials N           repeats (median reported; default 3)
  --cache-dir DIR      where synthetic checkpoints are kept (default $TMPDIR/trellis-synth)
  --out FILE           JSON path (default bench/results/<bench>-<adapter>-<time>.json)
  --no-save            print only`;

class UsageError extends Error {}

interface Flags {
  benches: Bench[];
  quick: boolean;
  archs: ArchName[];
  codes: KernelCode[];
  bits: (2 | 3 | 4)[];
  layers?: number;
  shapes: [number, number][];
  tokens: number[];
  sweep: boolean;
  tileSweep: boolean;
  paths: QtipPath[];
  timer?: TimerMethod;
  prompt?: number;
  gen?: number;
  lengths: number[];
  sequences: number[];
  roundSteps: number;
  maxBatchTokens: number;
  trials: number;
  cacheDir: string;
  out?: string;
  save: boolean;
  codesGiven: boolean;
  bitsGiven: boolean;
}

function list<T>(v: string, flag: string, parse: (s: string) => T | undefined, expected: string): T[] {
  return v.split(",").map((s) => {
    const x = parse(s.trim());
    if (x === undefined) throw new UsageError(`Bad --${flag} value "${s}": expected ${expected}`);
    return x;
  });
}

const posInt = (s: string) => (/^\d+$/.test(s) && Number(s) > 0 ? Number(s) : undefined);

export function parseBenchArgs(args: string[]): Flags {
  const [sub, ...rest] = args;
  if (!sub || sub === "--help") throw new UsageError(USAGE);
  if (sub !== "all" && !BENCHES.includes(sub as Bench)) {
    throw new UsageError(`Unknown benchmark "${sub}": expected ${BENCHES.join(", ")} or all\n${USAGE}`);
  }
  const v: Record<string, string> = {};
  const bools = new Set(["quick", "no-save", "sweep", "tile-sweep"]);
  const known = new Set([
    "arch",
    "code",
    "bits",
    "layers",
    "shapes",
    "tokens",
    "paths",
    "timer",
    "prompt",
    "gen",
    "lengths",
    "sequences",
    "round-steps",
    "max-batch-tokens",
    "trials",
    "cache-dir",
    "out",
    ...bools,
  ]);
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    if (!a.startsWith("--")) throw new UsageError(`Unexpected argument "${a}"\n${USAGE}`);
    const [k, inline] = a.slice(2).split("=", 2);
    if (!known.has(k)) throw new UsageError(`Unknown flag "--${k}"\n${USAGE}`);
    if (bools.has(k)) {
      v[k] = "1";
      continue;
    }
    const val = inline ?? rest[++i];
    if (val === undefined) throw new UsageError(`Flag "--${k}" needs a value`);
    v[k] = val;
  }
  const quick = v.quick === "1";
  const int = (k: string, d: number) => {
    if (v[k] === undefined) return d;
    const n = posInt(v[k]);
    if (n === undefined) throw new UsageError(`Bad --${k} "${v[k]}": expected a positive integer`);
    return n;
  };
  const codes = list(
    v.code ?? "HYB,1MAD,3INST,F16",
    "code",
    (
      s,
    ) => (["HYB", "1MAD", "3INST", "F16"].includes(s.toUpperCase())
      ? s.toUpperCase() as KernelCode
      : undefined),
    "HYB, 1MAD, 3INST or F16",
  );
  const timer = v.timer;
  if (timer !== undefined && timer !== "timestamp" && timer !== "wall") {
    throw new UsageError(`Bad --timer "${timer}": expected timestamp or wall`);
  }
  return {
    benches: sub === "all" ? [...BENCHES] : [sub as Bench],
    quick,
    archs: list(
      v.arch ?? (quick ? "tiny" : "llama2-7b"),
      "arch",
      (s) => (ARCH_NAMES.includes(s as ArchName) ? s as ArchName : undefined),
      ARCH_NAMES.join(", "),
    ),
    codes,
    codesGiven: v.code !== undefined,
    bits: list(
      v.bits ?? "2,3,4",
      "bits",
      (s) => (["2", "3", "4"].includes(s) ? Number(s) as 2 | 3 | 4 : undefined),
      "2, 3 or 4",
    ),
    bitsGiven: v.bits !== undefined,
    layers: v.layers === undefined ? undefined : int("layers", 1),
    shapes: v.shapes === undefined ? (quick ? QUICK_SHAPES : LLAMA_SHAPES) : list(v.shapes, "shapes", (s) => {
      const m = /^(\d+)x(\d+)$/.exec(s);
      if (!m || Number(m[1]) % 16 || Number(m[2]) % 16 || !Number(m[1]) || !Number(m[2])) return undefined;
      return [Number(m[1]), Number(m[2])] as [number, number];
    }, "MxN with M and N positive multiples of 16"),
    tokens: v.tokens === undefined ? [1] : list(v.tokens, "tokens", posInt, "positive integers"),
    sweep: v.sweep === "1",
    tileSweep: v["tile-sweep"] === "1",
    paths: v.paths === undefined ? ["auto"] : list(v.paths, "paths", (s) => {
      return (["auto", "tiled", "matvec"] as const).find((p) => p === s);
    }, "auto, tiled or matvec"),
    timer: timer as TimerMethod | undefined,
    prompt: v.prompt === undefined ? undefined : int("prompt", 1),
    gen: v.gen === undefined ? undefined : int("gen", 1),
    lengths: v.lengths === undefined
      ? (quick ? [64, 256, 512] : [512, 2048, 8192])
      : list(v.lengths, "lengths", posInt, "positive integers"),
    sequences: v.sequences === undefined
      ? (quick ? [1, 4, 8] : [1, 4, 16, 64, 256])
      : list(v.sequences, "sequences", posInt, "positive integers"),
    roundSteps: int("round-steps", quick ? 8 : 16),
    maxBatchTokens: int("max-batch-tokens", 2048),
    trials: int("trials", quick ? 2 : 3),
    cacheDir: v["cache-dir"] ?? join(Deno.env.get("TMPDIR") ?? "/tmp", "trellis-synth"),
    out: v.out,
    save: v["no-save"] !== "1",
  };
}

/** Prints rows as an aligned table with the given columns (key, header, format). */
export function table<T>(rows: T[], cols: [keyof T & string, string, (x: T[keyof T]) => string][]): string {
  const cells = rows.map((r) => cols.map(([k, , f]) => f(r[k])));
  const widths = cols.map(([, h], i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (xs: string[]) => xs.map((x, i) => x.padStart(widths[i])).join("  ");
  return [line(cols.map(([, h]) => h)), line(widths.map((w) => "-".repeat(w))), ...cells.map(line)].join(
    "\n",
  );
}

const f = (d: number) => (x: unknown) => (typeof x === "number" ? x.toFixed(d) : String(x));
const s = (x: unknown) => String(x);
/** A fraction as a percentage; "-" where not measured. */
const pct = (x: unknown) => (typeof x === "number" ? `${(100 * x).toFixed(1)}%` : "-");
/** Three significant digits (lavapipe's figures are tiny, the H100's large). */
const sig = (
  x: unknown,
) => (typeof x === "number" ? (x >= 100 ? x.toFixed(0) : x.toPrecision(3)) : String(x));

async function gitCommit(): Promise<string | null> {
  // A copied working tree (the GPU machine's) may carry stale git metadata: its caller names the commit.
  const given = Deno.env.get("TRELLIS_COMMIT");
  if (given) return given;
  try {
    const out = await new Deno.Command("git", { args: ["rev-parse", "--short", "HEAD"], stderr: "null" })
      .output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : null;
  } catch {
    return null;
  }
}

function slug(x: string): string {
  return x.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 40) || "gpu";
}

async function main(): Promise<void> {
  let flags: Flags;
  try {
    flags = parseBenchArgs(Deno.args);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(e.message);
    Deno.exit(2);
  }
  const log = (line: string) => console.error(line);
  const gpu = await openGpu();
  const adapter = describeGpu(gpu);
  const env = {
    adapter,
    adapterInfo: {
      vendor: gpu.adapterInfo.vendor,
      architecture: gpu.adapterInfo.architecture,
      device: gpu.adapterInfo.device,
      description: gpu.adapterInfo.description,
    },
    deno: Deno.version.deno,
    os: `${Deno.build.os}-${Deno.build.arch}`,
    commit: await gitCommit(),
    date: new Date().toISOString(),
    quick: flags.quick,
    args: Deno.args,
  };
  log(`adapter: ${adapter}`);
  const stamp = env.date.replace(/[-:]/g, "").replace(/\..*/, "").replace("T", "-");
  const specs: ModelSpec[] = [];
  const modelCodes = flags.codesGiven
    ? flags.codes.filter((c): c is SynthCode => c !== "F16")
    : ["HYB" as SynthCode];
  const modelBits = flags.bitsGiven ? flags.bits : [2 as const];
  for (const arch of flags.archs) {
    for (const code of modelCodes) {
      for (const bits of modelBits) {
        specs.push({ arch, code, bits, ...(flags.layers ? { layers: flags.layers } : {}) });
      }
    }
  }

  for (const bench of flags.benches) {
    let result: unknown;
    let text: string;
    if (bench === "kernels") {
      const r = await runKernelsBench(gpu.kernels, {
        codes: flags.codes,
        bits: flags.bits,
        shapes: flags.shapes,
        tokens: flags.tokens,
        tunes: flags.sweep ? QTIP_SWEEP : flags.tileSweep ? QTIP_TILE_SWEEP : undefined,
        paths: flags.tileSweep ? ["tiled"] : flags.paths,
        rotateBytes: flags.quick ? 16 << 20 : 256 << 20,
        streamBytes: flags.quick ? 64 << 20 : 1 << 30,
        targetMs: flags.quick ? 30 : 20,
        warmupMs: flags.quick ? 100 : 500,
        timer: flags.timer,
        log,
      });
      result = r;
      text = `streaming read: ${sig(r.streamReadGBps)} GB/s (${(r.streamBytes / 2 ** 20).toFixed(0)} MiB, ` +
        `${r.timer} timer)\n` +
        table(r.rows, [
          ["code", "code", s],
          ["bits", "bits", s],
          ["m", "m (out)", s],
          ["n", "n (in)", s],
          ["tokens", "M", s],
          ["tune", "tune", s],
          ["us", "us", f(1)],
          ["tflops", "TFLOP/s", f(2)],
          ["gbps", "GB/s", sig],
          ["fractionOfStream", "of stream", (x) => `${(100 * (x as number)).toFixed(0)}%`],
          ["copies", "copies", s],
        ]);
    } else {
      const rows: unknown[] = [];
      for (const spec of specs) {
        const modelDir = await synthModelDir(spec, flags.cacheDir, log);
        log(
          `${bench}: ${spec.arch} ${spec.code} ${spec.bits}-bit${
            spec.layers ? ` (${spec.layers} layers)` : ""
          }`,
        );
        if (bench === "decode") {
          rows.push(
            await runDecode(spec, {
              modelDir,
              prompt: flags.prompt ?? 128,
              gen: flags.gen ?? (flags.quick ? 32 : 512),
              roundSteps: flags.roundSteps,
              trials: flags.trials,
            }),
          );
        } else if (bench === "prefill") {
          rows.push(
            ...await runPrefill(spec, {
              modelDir,
              lengths: flags.lengths,
              maxBatchTokens: flags.maxBatchTokens,
              trials: flags.trials,
              log,
            }),
          );
        } else {
          rows.push(
            ...await runBatch(spec, {
              modelDir,
              sequences: flags.sequences,
              prompt: flags.prompt ?? (flags.quick ? 16 : 128),
              gen: flags.gen ?? (flags.quick ? 4 * flags.roundSteps + 1 : 128),
              roundSteps: flags.roundSteps,
              maxBatchTokens: flags.maxBatchTokens,
              log,
            }),
          );
        }
      }
      result = { rows };
      const common: [string, string, (x: unknown) => string][] = [
        ["arch", "arch", s],
        ["code", "code", s],
        ["bits", "bits", s],
        ["layers", "layers", s],
      ];
      const cols: Record<Exclude<Bench, "kernels">, [string, string, (x: unknown) => string][]> = {
        decode: [
          ...common,
          ["prompt", "prompt", s],
          ["generated", "gen", s],
          ["ttftMs", "TTFT ms", f(1)],
          [
            "tokensPerS",
            "tok/s",
            f(1),
          ],
          ["msPerToken", "ms/tok", f(2)],
          ["weightGBps", "weights GB/s", sig],
          ["gpuMsPerToken", "GPU ms/tok", (x) => (typeof x === "number" ? x.toFixed(2) : "-")],
          ["gpuIdleFraction", "GPU idle", pct],
        ],
        prefill: [...common, ["promptTokens", "prompt", s], ["ms", "ms", f(1)], [
          "tokensPerS",
          "tok/s",
          f(0),
        ]],
        batch: [
          ...common,
          ["sequences", "seqs", s],
          ["aggregateTokensPerS", "tok/s", f(1)],
          [
            "stepMsMean",
            "ms/step",
            f(2),
          ],
          ["roundMsP50", "round p50 ms", f(1)],
          ["roundMsP99", "round p99 ms", f(1)],
          [
            "itlMsP99",
            "ITL p99 ms",
            f(2),
          ],
          ["gpuIdleFraction", "GPU idle", pct],
        ],
      };
      // deno-lint-ignore no-explicit-any
      text = table(rows as any[], cols[bench] as any);
    }
    console.log(`\n## ${bench} (${adapter})\n${text}`);
    if (flags.save) {
      const path = flags.out && flags.benches.length === 1 ? flags.out : join(
        new URL(".", import.meta.url).pathname,
        "results",
        `${bench}-${slug(gpu.adapterInfo.description || gpu.adapterInfo.vendor)}-${stamp}.json`,
      );
      await Deno.mkdir(join(path, ".."), { recursive: true });
      await Deno.writeTextFile(path, JSON.stringify({ benchmark: bench, env, result }, null, 2) + "\n");
      log(`wrote ${path}`);
    }
  }
  gpu.device.destroy();
}

if (import.meta.main) await main();
