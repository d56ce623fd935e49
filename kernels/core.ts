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
  /** `timestamp-query` was granted. */
  timestampQuery: boolean;
}

const PARAM_ALIGN = 256;
const ARENA_BYTES = 1 << 16;

/** Stages small uniform blocks for a batch of dispatches and uploads them in one write per chunk. */
class ParamArena {
  #device: GPUDevice;
  #chunks: { buffer: GPUBuffer; staging: Uint8Array<ArrayBuffer>; used: number }[] = [];
  #current = 0;

  constructor(device: GPUDevice) {
    this.#device = device;
  }

  alloc(bytes: Uint8Array): GPUBufferBinding {
    const size = Math.ceil(bytes.byteLength / 16) * 16;
    if (size > ARENA_BYTES) throw new KernelError(`Params block too large: ${size} bytes`);
    let chunk = this.#chunks[this.#current];
    if (!chunk || chunk.used + size > ARENA_BYTES) {
      if (chunk) this.#current++;
      chunk = this.#chunks[this.#current];
      if (!chunk) {
        chunk = {
          buffer: this.#device.createBuffer({
            label: `params-${this.#current}`,
            size: ARENA_BYTES,
            usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
          }),
          staging: new Uint8Array(ARENA_BYTES),
          used: 0,
        };
        this.#chunks.push(chunk);
      }
    }
    const offset = chunk.used;
    chunk.staging.set(bytes, offset);
    chunk.used = Math.ceil((offset + size) / PARAM_ALIGN) * PARAM_ALIGN;
    return { buffer: chunk.buffer, offset, size };
  }

  /** Writes every staged block to the GPU. Call before submitting the commands that use them. */
  flush(): void {
    for (let i = 0; i <= this.#current && i < this.#chunks.length; i++) {
      const c = this.#chunks[i];
      if (c.used > 0) this.#device.queue.writeBuffer(c.buffer, 0, c.staging, 0, c.used);
      c.used = 0;
    }
    this.#current = 0;
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
  #arena: ParamArena;

  constructor(device: GPUDevice, features?: Partial<KernelFeatures>) {
    this.device = device;
    this.features = {
      subgroups: features?.subgroups ?? device.features.has("subgroups"),
      timestampQuery: features?.timestampQuery ?? device.features.has("timestamp-query"),
    };
    this.#arena = new ParamArena(device);
  }

  /** A compute pipeline for `source`'s `entryPoint` with the given override constants, cached. */
  pipeline(
    name: string,
    source: string,
    constants: Record<string, number> = {},
    entryPoint = "main",
  ): GPUComputePipeline {
    const key = `${name}:${entryPoint}:${JSON.stringify(constants)}`;
    let p = this.#pipelines.get(key);
    if (p) return p;
    let module = this.#modules.get(name);
    if (!module) {
      module = this.device.createShaderModule({ label: name, code: source });
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

  /** Stages a Params block; it reaches the GPU at the next `flush()`. */
  params(w: ParamWriter): GPUBufferBinding {
    return this.#arena.alloc(w.bytes());
  }

  /** Uploads staged Params blocks. Call before submitting command buffers that used `params()`. */
  flush(): void {
    this.#arena.flush();
  }

  /** Bind group 0 of `pipeline`, binding i = args[i]. */
  bind(pipeline: GPUComputePipeline, args: BufferArg[]): GPUBindGroup {
    return this.device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: args.map((a, i) => ({
        binding: i,
        resource: a instanceof GPUBuffer ? { buffer: a } : a,
      })),
    });
  }

  /** Records one dispatch of `pipeline` with `args` bound in order. */
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
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, this.bind(pipeline, args));
    pass.dispatchWorkgroups(x, y, z);
  }
}

/** Splits a 1-D workgroup count into (x, y) within the per-dimension limit. */
export function grid2d(k: Kernels, count: number): [number, number] {
  const max = k.device.limits.maxComputeWorkgroupsPerDimension;
  if (count <= max) return [count, 1];
  const y = Math.ceil(count / max);
  return [Math.ceil(count / y), y];
}
