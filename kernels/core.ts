// The kernel library core: a pipeline cache keyed by (kernel, constants), a uniform
// arena for per-dispatch parameters, and every kernel's encode function. Buffers in, buffers out;
// nothing here knows about models.
//
// Conventions shared by every kernel folder (see kernels/rmsnorm/ for the smallest example):
// - Activations are f32. Half-precision tensors (weights, embeddings) are bound as array<u32> and
//   unpacked with unpack2x16float, so no kernel needs the `shader-f16` feature.
// - Bindings: inputs, then outputs, then one `Params` uniform last. Per-dispatch values (sizes,
//   offsets, eps) go in Params; compile-time knobs (workgroup size) are `override` constants.
// - An encode function takes (kernels, pass, options) and records exactly the dispatches it needs.

export class KernelError extends Error {
  override name = "KernelError";
}

/** Features a kernel may use when present. */
export interface KernelFeatures {
  /** `subgroups` was granted; kernels may use subgroupAdd and friends. */
  subgroups: boolean;
  /**
   * The subgroup size when the adapter reports one fixed size (subgroupMinSize = subgroupMaxSize; 32 on
   * NVIDIA, 8 on lavapipe), else 0: kernels whose subgroup code assumes a size use it only when known.
   */
  subgroupSize: number;
  /** `timestamp-query` was granted. */
  timestampQuery: boolean;
  /**
   * The adapter runs on the CPU (lavapipe): there, work a kernel repeats per dispatch costs what idle lanes
   * cost on a GPU, so batches take the kernels that decode each weight once (the tiled matmuls).
   */
  cpuAdapter: boolean;
  /**
   * Kernels that keep their earlier plan where a newer one exists (names: each encode function says
   * which it reads), for measuring one against the other on the same machine: TRELLIS_LEGACY_KERNELS.
   */
  legacy: ReadonlySet<string>;
}

/** Whether v is a power of two (1, 2, 4, ...). */
export function isPow2(v: number): boolean {
  return Number.isInteger(v) && v > 0 && (v & (v - 1)) === 0;
}

/**
 * The subgroup size a kernel may build on: the device's one fixed size (KernelFeatures.subgroupSize) when
 * `subgroups` was granted and that size is a power of two in [lo, hi]; else 0 (the portable path).
 */
export function subgroupWidth(f: KernelFeatures, lo: number, hi: number): number {
  const sg = f.subgroupSize;
  return f.subgroups && isPow2(sg) && sg >= lo && sg <= hi ? sg : 0;
}

const PARAM_ALIGN = 256;
const ARENA_BYTES = 1 << 16;
/** Distinct Params blocks kept before the cache starts over (x 256 bytes of uniform memory). */
const MAX_PARAM_SLOTS = 16384;
/** Bind groups kept before the cache starts over. */
const MAX_BIND_GROUPS = 32768;

/**
 * Params blocks, deduplicated by content: a block with the same bytes as an earlier one gets the same
 * uniform slot, so the same dispatch recorded again (the next decode step, the next round) binds the
 * same resources and reuses its bind group. Slots are written once and never change, because commands
 * recorded earlier may still read them; when the cache is full, new buffers start a new generation
 * and every cached bind group is dropped with the old ones.
 */
class ParamCache {
  #device: GPUDevice;
  #slots = new Map<string, GPUBufferBinding>();
  #buffer: GPUBuffer | null = null;
  #used = ARENA_BYTES;
  /** Bumped when the cache starts over; bind-group caches keyed on it drop their entries. */
  generation = 0;

  constructor(device: GPUDevice) {
    this.#device = device;
  }

  get(bytes: Uint8Array<ArrayBuffer>): GPUBufferBinding {
    const size = Math.ceil(bytes.byteLength / 16) * 16;
    if (size > PARAM_ALIGN) throw new KernelError(`Params block too large: ${size} bytes`);
    const key = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4).join(",");
    const hit = this.#slots.get(key);
    if (hit) return hit;
    if (this.#slots.size >= MAX_PARAM_SLOTS) {
      this.#slots.clear();
      this.generation++;
    }
    if (this.#used + PARAM_ALIGN > ARENA_BYTES) {
      this.#buffer = this.#device.createBuffer({
        label: `params-${this.generation}`,
        size: ARENA_BYTES,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      });
      this.#used = 0;
    }
    const slot = { buffer: this.#buffer!, offset: this.#used, size };
    this.#device.queue.writeBuffer(slot.buffer, slot.offset, bytes, 0, size);
    this.#used += PARAM_ALIGN;
    this.#slots.set(key, slot);
    return slot;
  }
}

/** Packs a Params uniform: call u32/i32/f32 in the WGSL struct's field order. */
export class ParamWriter {
  #view: DataView;
  #bytes: Uint8Array<ArrayBuffer>;
  #offset = 0;

  constructor(maxBytes = 256) {
    this.#bytes = new Uint8Array(maxBytes);
    this.#view = new DataView(this.#bytes.buffer);
  }

  u32(v: number): this {
    this.#view.setUint32(this.#offset, v >>> 0, true);
    this.#offset += 4;
    return this;
  }

  i32(v: number): this {
    this.#view.setInt32(this.#offset, v | 0, true);
    this.#offset += 4;
    return this;
  }

  f32(v: number): this {
    this.#view.setFloat32(this.#offset, v, true);
    this.#offset += 4;
    return this;
  }

  bytes(): Uint8Array<ArrayBuffer> {
    return this.#bytes.subarray(0, Math.max(16, Math.ceil(this.#offset / 16) * 16));
  }
}

/** Buffer or a sub-range of one. */
export type BufferArg = GPUBuffer | GPUBufferBinding;

/** Owns the device's pipelines and the parameter arena. One per device. */
export class Kernels {
  readonly device: GPUDevice;
  readonly features: KernelFeatures;
  #pipelines = new Map<string, GPUComputePipeline>();
  #modules = new Map<string, GPUShaderModule>();
  #params: ParamCache;
  #bindGroups = new Map<string, GPUBindGroup>();
  #bindGeneration = 0;
  #ids = new WeakMap<object, number>();
  #nextId = 1;

  constructor(device: GPUDevice, features?: Partial<KernelFeatures>) {
    this.device = device;
    this.features = {
      subgroups: features?.subgroups ?? device.features.has("subgroups"),
      subgroupSize: features?.subgroupSize ?? 0,
      timestampQuery: features?.timestampQuery ?? device.features.has("timestamp-query"),
      cpuAdapter: features?.cpuAdapter ?? false,
      legacy: features?.legacy ?? new Set(),
    };
    this.#params = new ParamCache(device);
  }

  /**
   * A compute pipeline for `source`'s `entryPoint` with the given override constants, cached. A generated
   * kernel passes a function, called only when `name` (which must then name the variant) is new.
   */
  pipeline(
    name: string,
    source: string | (() => string),
    constants: Record<string, number> = {},
    entryPoint = "main",
  ): GPUComputePipeline {
    const key = `${name}:${entryPoint}:${JSON.stringify(constants)}`;
    let p = this.#pipelines.get(key);
    if (p) return p;
    let module = this.#modules.get(name);
    if (!module) {
      const code = typeof source === "string" ? source : source();
      module = this.device.createShaderModule({ label: name, code });
      this.#modules.set(name, module);
    }
    p = this.device.createComputePipeline({
      label: key,
      layout: "auto",
      compute: { module, entryPoint, constants },
    });
    this.#pipelines.set(key, p);
    return p;
  }

  /** Compilation messages of a kernel's module (tests assert it compiles without warnings). */
  async compilationMessages(name: string, source: string): Promise<readonly GPUCompilationMessage[]> {
    const module = this.#modules.get(name) ?? this.device.createShaderModule({ label: name, code: source });
    const info = await module.getCompilationInfo();
    return info.messages;
  }

  /** A uniform slot holding this Params block (shared with every earlier block of the same bytes). */
  params(w: ParamWriter): GPUBufferBinding {
    return this.#params.get(w.bytes());
  }

  #id(o: object): number {
    let id = this.#ids.get(o);
    if (id === undefined) {
      id = this.#nextId++;
      this.#ids.set(o, id);
    }
    return id;
  }

  /** Bind group 0 of `pipeline`, binding i = args[i]; the same pipeline and ranges reuse one group. */
  bind(pipeline: GPUComputePipeline, args: BufferArg[]): GPUBindGroup {
    if (this.#bindGeneration !== this.#params.generation || this.#bindGroups.size >= MAX_BIND_GROUPS) {
      this.#bindGroups.clear();
      this.#bindGeneration = this.#params.generation;
    }
    let key = String(this.#id(pipeline));
    for (const a of args) {
      key += a instanceof GPUBuffer
        ? `|${this.#id(a)}`
        : `|${this.#id(a.buffer)}:${a.offset ?? 0}:${a.size ?? "all"}`;
    }
    let group = this.#bindGroups.get(key);
    if (!group) {
      group = this.device.createBindGroup({
        layout: pipeline.getBindGroupLayout(0),
        entries: args.map((a, i) => ({
          binding: i,
          resource: a instanceof GPUBuffer ? { buffer: a } : a,
        })),
      });
      this.#bindGroups.set(key, group);
    }
    return group;
  }

  /** Dispatches recorded since creation (benchmarks report dispatches per decode step). */
  dispatches = 0;
  /** When set, every dispatch recorded (not captured) is also appended here (bench/step_profile.ts times a
   * prefill's dispatches this way). */
  tap: CapturedDispatch[] | null = null;
  #capture: CapturedDispatch[] | null = null;

  /** Records one dispatch of `pipeline` with `args` bound in order (or captures it, inside capture()). */
  dispatch(
    pass: GPUComputePassEncoder,
    pipeline: GPUComputePipeline,
    args: BufferArg[],
    x: number,
    y = 1,
    z = 1,
  ): void {
    const max = this.device.limits.maxComputeWorkgroupsPerDimension;
    if (x > max || y > max || z > max) {
      throw new KernelError(`Dispatch of "${pipeline.label}" too large: [${x}, ${y}, ${z}] exceeds ${max}`);
    }
    if (x === 0 || y === 0 || z === 0) return;
    const group = this.bind(pipeline, args);
    if (this.#capture) {
      this.#capture.push({ pipeline, group, x, y, z });
      return;
    }
    this.dispatches++;
    this.tap?.push({ pipeline, group, x, y, z });
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(x, y, z);
  }

  /**
   * The dispatches `encode` makes, as a list that replay() records again with three calls each and no other
   * work: WebGPU cannot reuse a compute command buffer, but a decode step is the same list every time.
   * Everything a captured dispatch reads must stay valid while the list is used (buffers are not destroyed;
   * Params slots are never rewritten). `encode` gets a pass it must not touch except through kernels.
   */
  capture(encode: (pass: GPUComputePassEncoder) => void): CapturedDispatch[] {
    if (this.#capture) throw new KernelError("capture() does not nest");
    const list: CapturedDispatch[] = [];
    this.#capture = list;
    try {
      encode(NO_PASS);
    } finally {
      this.#capture = null;
    }
    return list;
  }

  /** Records a captured list into `pass`. */
  replay(pass: GPUComputePassEncoder, list: readonly CapturedDispatch[]): void {
    let last: GPUComputePipeline | null = null;
    for (let i = 0; i < list.length; i++) {
      const d = list[i];
      if (d.pipeline !== last) {
        pass.setPipeline(d.pipeline);
        last = d.pipeline;
      }
      pass.setBindGroup(0, d.group);
      pass.dispatchWorkgroups(d.x, d.y, d.z);
    }
    this.dispatches += list.length;
  }
}

/** One dispatch as capture() keeps it. */
export interface CapturedDispatch {
  pipeline: GPUComputePipeline;
  group: GPUBindGroup;
  x: number;
  y: number;
  z: number;
}

/** The pass handed to encoders during capture(): any direct use is a bug, so every method throws. */
const NO_PASS = new Proxy({}, {
  get() {
    throw new KernelError("An encoder used the compute pass directly during capture()");
  },
}) as GPUComputePassEncoder;

/** Splits a 1-D workgroup count into (x, y) within the per-dimension limit. */
export function grid2d(k: Kernels, count: number): [number, number] {
  const max = k.device.limits.maxComputeWorkgroupsPerDimension;
  if (count <= max) return [count, 1];
  const y = Math.ceil(count / max);
  return [Math.ceil(count / y), y];
}
