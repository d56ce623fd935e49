// GPU timing for the benchmarks: timestamp queries around one compute pass of many dispatches when the
// device has `timestamp-query`, otherwise wall clock around submit + one mapAsync, as the slope between a
// short and a long run (Deno's mapAsync adds a fixed ~10 ms sleep, shared/device/README.md, which the
// difference cancels). Either way the per-dispatch figure includes the ~2 us launch cost the engine also pays.
import type { CapturedDispatch, Kernels } from "../kernels/mod.ts";

export type TimerMethod = "timestamp" | "wall";

/** Records dispatch number `rep` of a timed run into `pass`. */
export type Encode = (pass: GPUComputePassEncoder, rep: number) => void;

export class GpuTimer {
  readonly method: TimerMethod;
  #k: Kernels;
  #query?: GPUQuerySet;
  #resolve?: GPUBuffer;
  #read: GPUBuffer;

  constructor(k: Kernels, method?: TimerMethod) {
    this.#k = k;
    const dev = k.device;
    const has = dev.features.has("timestamp-query");
    if (method === "timestamp" && !has) {
      throw new Error(`Cannot time with "timestamp": the device lacks the timestamp-query feature`);
    }
    this.method = method ?? (has ? "timestamp" : "wall");
    if (this.method === "timestamp") {
      this.#query = dev.createQuerySet({ type: "timestamp", count: 2 });
      this.#resolve = dev.createBuffer({
        size: 16,
        usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      });
    }
    this.#read = dev.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  }

  /** Milliseconds of one run of `reps` dispatches (timestamp) or of submit-to-map (wall). */
  async #run(encode: Encode, reps: number): Promise<number> {
    const dev = this.#k.device;
    const enc = dev.createCommandEncoder({ label: "bench" });
    const pass = enc.beginComputePass(
      this.#query
        ? { timestampWrites: { querySet: this.#query, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } }
        : {},
    );
    for (let r = 0; r < reps; r++) encode(pass, r);
    pass.end();
    if (this.#query) {
      enc.resolveQuerySet(this.#query, 0, 2, this.#resolve!, 0);
      enc.copyBufferToBuffer(this.#resolve!, 0, this.#read, 0, 16);
    }
    const cmd = enc.finish();
    const t0 = performance.now();
    dev.queue.submit([cmd]);
    await this.#read.mapAsync(GPUMapMode.READ);
    const wall = performance.now() - t0;
    const ts = new BigUint64Array(this.#read.getMappedRange().slice(0));
    this.#read.unmap();
    if (!this.#query) return wall;
    return Number(ts[1] - ts[0]) / 1e6;
  }

  /** Milliseconds per dispatch: the median over `trials` of runs of `reps` dispatches. */
  async perDispatch(encode: Encode, reps: number, trials = 5): Promise<number> {
    const xs: number[] = [];
    for (let t = 0; t < trials; t++) {
      if (this.method === "timestamp") {
        xs.push((await this.#run(encode, reps)) / reps);
      } else {
        const short = await this.#run(encode, reps);
        const long = await this.#run(encode, 4 * reps);
        xs.push(Math.max(0, long - short) / (3 * reps));
      }
    }
    return median(xs);
  }

  /** Dispatches per run so one run lasts about `targetMs` (from a short probe). */
  async repsFor(encode: Encode, targetMs: number, maxReps = 4000): Promise<number> {
    const probe = 4;
    const ms = this.method === "timestamp" ? (await this.#run(encode, probe)) / probe : Math.max(
      1e-3,
      ((await this.#run(encode, 4 * probe)) - (await this.#run(encode, probe))) / (3 * probe),
    );
    return Math.max(3, Math.min(maxReps, Math.ceil(targetMs / Math.max(ms, 1e-4))));
  }

  destroy(): void {
    this.#query?.destroy();
    this.#resolve?.destroy();
    this.#read.destroy();
  }
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i];
}

/**
 * A near-empty dispatch that still waits for the one before it, as a decode step's do: 264 workgroups, one
 * invocation of which bumps a word that the next one reads. A chain of them is the floor of a pass of that
 * many dispatches (bench/step_profile.ts, bench/latency_lab.ts).
 */
export function emptyDispatch(dev: GPUDevice): CapturedDispatch {
  const pipeline = dev.createComputePipeline({
    layout: "auto",
    compute: {
      module: dev.createShaderModule({
        code: `@group(0) @binding(0) var<storage, read_write> b: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x == 0u) {
    b[0] = b[0] + 1u;
  }
}`,
      }),
      entryPoint: "main",
    },
  });
  const buffer = dev.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE });
  const group = dev.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [{ binding: 0, resource: { buffer } }],
  });
  return { pipeline, group, x: 264, y: 1, z: 1 };
}
