// `deno task bench kernels`: the fused QTIP dequantize-matvec (kernels/qtip) per code and bitrate at the
// Llama linear shapes, against the streaming-read bandwidth the same run measures with a plain WGSL read
// kernel (bench/stream_read.wgsl), plus the fp16 matvec at the same shapes for scale.
//
// Method: the GPU is warmed with ~0.5 s of streaming reads first (an idle H100 drops its SM clock,
// shared/device/README.md); each shape gets enough weight copies that the rotation (>= 256 MiB) cannot sit in
// L2, and each timed run is one compute pass of many dispatches cycling through them (bench/_timing.ts).
// Effective GB/s counts the trellis bytes only (m n K / 8), the bytes the kernel cannot avoid reading.
import streamSource from "./stream_read.wgsl" with { type: "text" };
import {
  GPU_LAYOUT_HEADER,
  GPU_LAYOUT_MAGIC,
  GPU_LAYOUT_MMA,
  gpuLayoutWords,
  type Kernels,
  matmulF16,
  ParamWriter,
  type QtipCode,
  qtipMatmul,
  type QtipMatmulOptions,
} from "../kernels/mod.ts";
import { qtipMvVariant } from "../kernels/qtip/qtip.ts";
import { GpuTimer, type TimerMethod } from "./_timing.ts";

export type KernelCode = "HYB" | "1MAD" | "3INST" | "F16";

/** (out features m, in features n) of the Llama 2 / 3.1 linears (issue 4's list plus 13B and 405B down). */
export const LLAMA_SHAPES: [number, number][] = [
  [4096, 4096],
  [11008, 4096],
  [4096, 11008],
  [14336, 4096],
  [4096, 14336],
  [5120, 5120],
  [13824, 5120],
  [5120, 13824],
  [8192, 8192],
  [28672, 8192],
  [8192, 28672],
  [53248, 16384],
  [16384, 53248],
];
/** Small shapes for lavapipe (--quick): a power of two, a non-square pair with the 28-factor size. */
export const QUICK_SHAPES: [number, number][] = [[512, 512], [896, 256], [256, 896], [1024, 1024]];

export interface KernelsBenchOptions {
  codes: KernelCode[];
  bits: (2 | 3 | 4)[];
  shapes: [number, number][];
  /** Batch sizes (rows of x); each shape is run at every one. */
  tokens: number[];
  /** QTIP matvec tunings to try at each shape (default: the kernel's own choice). */
  tunes?: QtipTune[];
  /** QTIP paths to run at each shape and batch (default: the kernel's own choice, "auto"). */
  paths?: QtipPath[];
  /** Bytes the weight copies of one shape rotate through (defeats L2). */
  rotateBytes: number;
  /** Bytes the streaming-read kernel reads per dispatch. */
  streamBytes: number;
  /** Target milliseconds of GPU work per timed run. */
  targetMs: number;
  warmupMs: number;
  timer?: TimerMethod;
  log?: (line: string) => void;
}

export type QtipTune = NonNullable<QtipMatmulOptions["tune"]>;
export type QtipPath = NonNullable<QtipMatmulOptions["path"]>;

/** The tuning sweep of `--sweep`: workgroup size x LUT copies (one or 16: 2-8 copies share banks about as
 * much as one, bench note in docs/BENCHMARKS.md) x unroll x tile-rows a workgroup (with subgroups, which
 * the earlier sweeps found never slower). */
export const QTIP_SWEEP: QtipTune[] = [256, 512, 1024].flatMap((wg) =>
  [0, 4].flatMap((repShift) =>
    [1, 2].flatMap((unroll) =>
      ([1, 2] as const).map((rows) => ({ wg, repShift, unroll: unroll as 1 | 2, subgroups: true, rows }))
    )
  )
);

/** The tiled matmul's blocks for `--tile-sweep` (run with path "tiled"): rows x tokens, 16-column steps
 * single or double buffered, 32-column steps single buffered (double would not fit 48 KiB). */
export const QTIP_TILE_SWEEP: QtipTune[] = ([[2, 2], [2, 1], [1, 2], [1, 1]] as const).flatMap(([rb, tb]) => [
  { tile: { rb, tb, bk: 16 as const, db: false } },
  { tile: { rb, tb, bk: 16 as const, db: true } },
  { tile: { rb, tb, bk: 32 as const, db: false } },
]);

export interface KernelRow {
  code: KernelCode;
  bits: number;
  m: number;
  n: number;
  tokens: number;
  /** The QTIP tuning measured ("default": the kernel's choice). */
  tune: string;
  /** Wall time of the first run: pipeline creation (shader compile) plus first touch. */
  compileMs: number;
  us: number;
  /** 2 * tokens * m * n / time. */
  tflops: number;
  /** Weight bytes the kernel must read (trellis, or the fp16 matrix). */
  weightBytes: number;
  gbps: number;
  /** gbps / the streaming-read GB/s of this run. */
  fractionOfStream: number;
  copies: number;
  reps: number;
}

export interface KernelsBenchResult {
  timer: TimerMethod;
  streamReadGBps: number;
  streamBytes: number;
  rows: KernelRow[];
}

const CODE_MAP: Record<Exclude<KernelCode, "F16">, QtipCode> = {
  HYB: "hyb",
  "1MAD": "1mad",
  "3INST": "3inst",
};
const FILL_CHUNK = 16 << 20;

function storage(dev: GPUDevice, label: string, bytes: number): GPUBuffer {
  return dev.createBuffer({
    label,
    size: Math.ceil(bytes / 16) * 16,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
  });
}

/**
 * Random words (xorshift32, ANDed with `mask`) into `buf` from word `fromWord`, uploaded in 16 MiB pieces,
 * waiting for the queue every 256 MiB so staging memory stays bounded for the 1-2 GB weights.
 */
async function fillRandom(
  dev: GPUDevice,
  buf: GPUBuffer,
  o: { fromWord?: number; words: number; seed: number; mask?: number },
): Promise<void> {
  const { fromWord = 0, words, seed, mask = 0xffffffff } = o;
  let s = (seed * 2654435761 + 1) >>> 0 || 1;
  const chunk = new Uint32Array(Math.min(words, FILL_CHUNK / 4));
  for (let w = 0; w < words; w += chunk.length) {
    const n = Math.min(chunk.length, words - w);
    for (let i = 0; i < n; i++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      chunk[i] = (s & mask) >>> 0;
    }
    dev.queue.writeBuffer(buf, (fromWord + w) * 4, chunk, 0, n);
    if ((w + n) % (64 * chunk.length) === 0) await idle(dev);
  }
}

/** Copies `src` into `dst` with copyBufferToBuffer (setup only; speed does not matter here). */
function copyAll(dev: GPUDevice, src: GPUBuffer, dst: GPUBuffer): void {
  const enc = dev.createCommandEncoder();
  enc.copyBufferToBuffer(src, 0, dst, 0, src.size);
  dev.queue.submit([enc.finish()]);
}

async function idle(dev: GPUDevice): Promise<void> {
  dev.queue.submit([]);
  await dev.queue.onSubmittedWorkDone();
}

/**
 * The machine's practical read bandwidth (bench/stream_read.wgsl over one buffer of up to `streamBytes`, random
 * contents), after keeping the GPU busy for `warmupMs` so its clocks are up: the ceiling a kernel's reads meet.
 */
export async function measureStreamRead(
  k: Kernels,
  timer: GpuTimer,
  o: { streamBytes: number; targetMs: number; warmupMs: number },
): Promise<{ gbps: number; bytes: number; ms: number }> {
  const dev = k.device;
  const bytes = Math.min(o.streamBytes, Math.floor(dev.limits.maxStorageBufferBindingSize / 16) * 16);
  const src = storage(dev, "stream-src", bytes);
  await fillRandom(dev, src, { words: bytes / 4, seed: 7 });
  const sink = storage(dev, "stream-sink", 4 * 65536);
  const pipe = k.pipeline("bench-stream-read", streamSource, { WG: 256 }, "main");
  const count = bytes / 16;
  const groups = Math.min(dev.limits.maxComputeWorkgroupsPerDimension, Math.ceil(count / (256 * 8)));
  const encode = (pass: GPUComputePassEncoder) =>
    k.dispatch(pass, pipe, [src, sink, k.params(new ParamWriter().u32(count).u32(0x9e3779b9))], groups);
  await idle(dev);
  const reps = await timer.repsFor(encode, o.targetMs, 1000);
  const warmEnd = performance.now() + o.warmupMs;
  while (performance.now() < warmEnd) await timer.perDispatch(encode, reps, 1);
  const ms = await timer.perDispatch(encode, reps);
  src.destroy();
  sink.destroy();
  return { gbps: bytes / (ms * 1e-3) / 1e9, bytes, ms };
}

export async function runKernelsBench(k: Kernels, o: KernelsBenchOptions): Promise<KernelsBenchResult> {
  const dev = k.device;
  const log = o.log ?? (() => {});
  const timer = new GpuTimer(k, o.timer);
  const maxBinding = dev.limits.maxStorageBufferBindingSize;
  const { gbps: streamReadGBps, bytes: streamBytes, ms: streamMs } = await measureStreamRead(k, timer, o);
  log(
    `stream read: ${(streamBytes / 2 ** 20).toFixed(0)} MiB in ${(streamMs * 1e3).toFixed(1)} us = ` +
      `${streamReadGBps.toFixed(1)} GB/s (${timer.method} timer)`,
  );

  const rows: KernelRow[] = [];
  const maxM = Math.max(...o.tokens);
  for (const [m, n] of o.shapes) {
    const x = storage(dev, "x", maxM * n * 4);
    const xVals = new Float32Array(maxM * n).map((_, i) => Math.sin(i));
    dev.queue.writeBuffer(x, 0, xVals);
    const out = storage(dev, "out", maxM * m * 4);
    const lut = storage(dev, "lut", 512 * 2 * 4);
    dev.queue.writeBuffer(lut, 0, new Float32Array(1024).map((_, i) => Math.cos(i)));
    for (const code of o.codes) {
      for (const bits of code === "F16" ? [16] : o.bits) {
        const words = code === "F16" ? (m * n) / 2 : gpuLayoutWords(m, n, bits);
        const bytes = words * 4;
        if (bytes > maxBinding) {
          log(`skip ${code} ${bits}-bit ${m}x${n}: ${bytes} bytes exceed the binding limit ${maxBinding}`);
          continue;
        }
        const copies = Math.max(2, Math.min(64, Math.ceil(o.rotateBytes / bytes)));
        const bufs: GPUBuffer[] = [];
        try {
          bufs.push(storage(dev, `w0`, bytes));
          if (code === "F16") {
            // Clearing exponent bit 14 of both halves keeps every value finite and below 2.
            await fillRandom(dev, bufs[0], { words, seed: m ^ n, mask: 0xbfffbfff });
          } else {
            await fillRandom(dev, bufs[0], {
              fromWord: GPU_LAYOUT_HEADER,
              words: words - GPU_LAYOUT_HEADER,
              seed: m ^ n ^ bits,
            });
            const flags = code === "HYB" ? GPU_LAYOUT_MMA : 0;
            dev.queue.writeBuffer(
              bufs[0],
              0,
              new Uint32Array([GPU_LAYOUT_MAGIC, flags, bits, code === "HYB" ? 2 : 1]),
            );
          }
          for (let c = 1; c < copies; c++) {
            bufs.push(storage(dev, `w${c}`, bytes));
            copyAll(dev, bufs[0], bufs[c]);
          }
          await idle(dev);
          for (const M of o.tokens) {
            const tunes: (QtipTune | null)[] = code === "F16" || !o.tunes?.length ? [null] : o.tunes;
            const paths: QtipPath[] = code === "F16" || !o.paths?.length ? ["auto"] : o.paths;
            for (const [tune, path] of tunes.flatMap((t) => paths.map((p) => [t, p] as const))) {
              // The QTIP call of copy w of the weights.
              const qtipCall = (w: GPUBuffer): QtipMatmulOptions => ({
                x,
                trellis: w,
                lut,
                out,
                M,
                m,
                n,
                code: CODE_MAP[code as Exclude<KernelCode, "F16">],
                K: bits as 2 | 3 | 4,
                mma: code === "HYB",
                path,
                ...(tune ? { tune } : {}),
              });
              // A swept workgroup the reduction's memory halves at this M runs as the smaller one: skip it
              // rather than time (and label) a repeat.
              if (
                tune?.wg && code !== "F16" && M <= 16 && path !== "tiled" &&
                qtipMvVariant(k, qtipCall(bufs[0])).wg !== tune.wg
              ) continue;
              const encode = (pass: GPUComputePassEncoder, r: number) => {
                const w = bufs[r % copies];
                if (code === "F16") {
                  matmulF16(k, pass, { x, w, out, M, N: m, K: n });
                } else {
                  qtipMatmul(k, pass, qtipCall(w));
                }
              };
              const c0 = performance.now();
              await timer.perDispatch(encode, copies, 1); // compile + first touch
              const compileMs = performance.now() - c0;
              const r = Math.max(copies, await timer.repsFor(encode, o.targetMs));
              const ms = await timer.perDispatch(encode, r);
              const weightBytes = code === "F16" ? m * n * 2 : (m * n * bits) / 8;
              const gbps = weightBytes / (ms * 1e-3) / 1e9;
              const tuneName = (tune?.tile
                ? `rb${tune.tile.rb} tb${tune.tile.tb} bk${tune.tile.bk ?? 16} s${tune.tile.splits ?? 1}` +
                  (tune.tile.db === undefined ? "" : tune.tile.db ? " db" : " sb")
                : tune
                ? `wg${tune.wg} rep${tune.repShift} u${tune.unroll} ${tune.subgroups ? "sg" : "nosg"}` +
                  (tune.rows && tune.rows > 1 ? ` r${tune.rows}` : "")
                : "default") + (path === "auto" ? "" : ` ${path}`);
              const row: KernelRow = {
                code,
                bits,
                m,
                n,
                tokens: M,
                tune: tuneName,
                compileMs,
                us: ms * 1e3,
                tflops: (2 * M * m * n) / (ms * 1e-3) / 1e12,
                weightBytes,
                gbps,
                fractionOfStream: gbps / streamReadGBps,
                copies,
                reps: r,
              };
              rows.push(row);
              log(
                `${code} ${bits}-bit ${m}x${n} M=${M} ${tuneName}: ${row.us.toFixed(1)} us, ${
                  gbps.toFixed(1)
                } GB/s ` +
                  `(${(100 * row.fractionOfStream).toFixed(0)}% of stream read), ${
                    row.tflops.toFixed(2)
                  } TFLOP/s`,
              );
            }
          }
        } finally {
          for (const b of bufs) b.destroy();
        }
      }
    }
    for (const b of [x, out, lut]) b.destroy();
  }
  timer.destroy();
  return { timer: timer.method, streamReadGBps, streamBytes, rows };
}
