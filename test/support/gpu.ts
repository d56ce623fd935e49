// GPU helpers for tests: the WebGPU probe, a shared device (or a skip when there is no adapter),
// uploads, readbacks and tolerance checks.
import { Kernels } from "../../kernels/mod.ts";
import { preferVulkan } from "../../engine/gpu.ts";

// Before any test module of this process asks for an adapter (see preferVulkan).
preferVulkan();

/**
 * TRELLIS_REQUIRE_GPU=1 (set by .ci/run, which guarantees an adapter): GPU tests run and fail when there is
 * no WebGPU adapter, instead of being ignored, so a machine that lost its adapter cannot pass CI.
 */
export const REQUIRE_GPU = Deno.env.get("TRELLIS_REQUIRE_GPU") === "1";

let shared: Promise<Kernels> | undefined;

/** The module's test device (opened once, destroyed after the module's last test); throws without an adapter. */
export function testKernels(): Promise<Kernels> {
  shared ??= (async () => {
    const adapter = await navigator.gpu?.requestAdapter();
    if (!adapter) throw new Error(`No WebGPU adapter: ${GPU_HELP}`);
    const want: GPUFeatureName[] = ["shader-f16", "timestamp-query"];
    const requiredFeatures = want.filter((f) => adapter.features.has(f));
    const l = adapter.limits;
    const device = await adapter.requestDevice({
      requiredFeatures,
      requiredLimits: {
        maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
        maxBufferSize: l.maxBufferSize,
        maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
        maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
        maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
        maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
      },
    });
    return new Kernels(device);
  })();
  return shared;
}

// The module's device is destroyed after its last test, rather than left to the isolate's teardown.
Deno.test.afterAll(async () => {
  const k = await shared?.catch(() => null);
  shared = undefined;
  k?.device.destroy();
});

const GPU_HELP = "install Mesa's lavapipe (apt-get install mesa-vulkan-drivers) and set XDG_RUNTIME_DIR";

/** Whether this machine has a WebGPU adapter (a probe only: no device is opened). */
export async function hasWebGpu(): Promise<boolean> {
  try {
    return !!(await navigator.gpu?.requestAdapter());
  } catch {
    return false;
  }
}

/** A device with `subgroups` of one known size, or the reason there is none. The caller destroys it. */
export async function subgroupKernels(): Promise<Kernels | string> {
  const adapter = await navigator.gpu?.requestAdapter();
  if (!adapter) return "no WebGPU adapter";
  const info = adapter.info as GPUAdapterInfo & { subgroupMinSize?: number; subgroupMaxSize?: number };
  if (!info.subgroupMinSize || info.subgroupMinSize !== info.subgroupMaxSize) {
    return `the adapter reports no fixed subgroup size (${info.subgroupMinSize}..${info.subgroupMaxSize})`;
  }
  try {
    const l = adapter.limits;
    const device = await adapter.requestDevice({
      requiredFeatures: ["subgroups" as GPUFeatureName],
      requiredLimits: {
        maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
        maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
        maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
        maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
      },
    });
    if (!device.features.has("subgroups")) {
      device.destroy();
      return "the adapter does not grant subgroups";
    }
    return new Kernels(device, { subgroups: true, subgroupSize: info.subgroupMinSize });
  } catch (e) {
    return `the adapter does not grant subgroups (${(e as Error).message})`;
  }
}

/** Why the subgroup path cannot run here (null: it can), probed with a device that is closed again; for
 * `ignore:`, awaited once at the top of a test module. */
export function noSubgroups(): Promise<string | null> {
  return withSubgroupKernels((sg) => Promise.resolve(typeof sg === "string" ? sg : null));
}

/** Runs `use` with subgroupKernels()'s device (or the reason there is none), destroying the device after. */
export async function withSubgroupKernels<T>(use: (sg: Kernels | string) => Promise<T>): Promise<T> {
  const sg = await subgroupKernels();
  try {
    return await use(sg);
  } finally {
    if (typeof sg !== "string") sg.device.destroy();
  }
}

/**
 * For `ignore:`, awaited once at the top of a test module: true when this machine has no WebGPU adapter
 * (said once), so the module's GPU tests show as ignored rather than passing without running. Always false
 * under TRELLIS_REQUIRE_GPU=1: the tests then run and fail, naming the missing adapter.
 */
export async function noGpu(): Promise<boolean> {
  if (REQUIRE_GPU || await hasWebGpu()) return false;
  console.warn(`Skipping GPU tests: no WebGPU adapter (${GPU_HELP})`);
  return true;
}

type Typed = Float32Array | Uint32Array | Int32Array | Uint16Array | Float16Array | Uint8Array;

/** A storage buffer holding `data` (padded to 16 bytes). */
export function upload(k: Kernels, data: Typed, extraUsage = 0): GPUBuffer {
  const size = Math.max(16, Math.ceil(data.byteLength / 16) * 16);
  const buf = k.device.createBuffer({
    size,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST | extraUsage,
    mappedAtCreation: true,
  });
  new Uint8Array(buf.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  buf.unmap();
  return buf;
}

/** An zero-filled storage buffer of `bytes` bytes. */
export function scratch(k: Kernels, bytes: number): GPUBuffer {
  return k.device.createBuffer({
    size: Math.max(16, Math.ceil(bytes / 16) * 16),
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
  });
}

/** Runs `record` in one compute pass, submits, and waits. */
export async function run(k: Kernels, record: (pass: GPUComputePassEncoder) => void): Promise<void> {
  const enc = k.device.createCommandEncoder();
  const pass = enc.beginComputePass();
  record(pass);
  pass.end();
  k.device.queue.submit([enc.finish()]);
  await k.device.queue.onSubmittedWorkDone();
}

/** Copies `bytes` bytes of `buf` back to the host. */
export async function readBytes(k: Kernels, buf: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
  const size = Math.ceil(bytes / 4) * 4;
  const rb = k.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = k.device.createCommandEncoder();
  enc.copyBufferToBuffer(buf, 0, rb, 0, size);
  k.device.queue.submit([enc.finish()]);
  await rb.mapAsync(GPUMapMode.READ);
  const out = rb.getMappedRange().slice(0, bytes);
  rb.unmap();
  rb.destroy();
  return out;
}

export async function readF32(k: Kernels, buf: GPUBuffer, n: number): Promise<Float32Array> {
  return new Float32Array(await readBytes(k, buf, n * 4));
}

export async function readU32(k: Kernels, buf: GPUBuffer, n: number): Promise<Uint32Array> {
  return new Uint32Array(await readBytes(k, buf, n * 4));
}

/**
 * Fails unless |got[i] - want[i]| <= tol * (1 + |want[i]|) for every i < want.length (NaN fails): assertClose
 * with atol = rtol = tol over want's length, where `got` may run on (a readback of a larger buffer).
 */
export function assertNear(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: number,
  label: string,
): void {
  if (got.length < want.length) throw new Error(`${label}: ${got.length} values, expected ${want.length}`);
  assertClose(Array.from({ length: want.length }, (_, i) => got[i]), want, { atol: tol, rtol: tol, label });
}

/** Asserts |a - b| <= atol + rtol * |b| elementwise, naming the first bad index. */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  opts: { atol?: number; rtol?: number; label?: string } = {},
): void {
  const { atol = 1e-5, rtol = 1e-5, label = "" } = opts;
  if (actual.length !== expected.length) {
    throw new Error(`${label} length mismatch: got ${actual.length}, expected ${expected.length}`);
  }
  let worst = 0;
  let worstAt = -1;
  for (let i = 0; i < actual.length; i++) {
    const err = Math.abs(actual[i] - expected[i]);
    const tol = atol + rtol * Math.abs(expected[i]);
    if (!(err <= tol)) {
      const excess = Number.isNaN(err) ? Infinity : err - tol;
      if (excess > worst || worstAt < 0) {
        worst = excess;
        worstAt = i;
      }
    }
  }
  if (worstAt >= 0) {
    throw new Error(
      `${label} mismatch at ${worstAt}: got ${actual[worstAt]}, expected ${expected[worstAt]} ` +
        `(atol ${atol}, rtol ${rtol})`,
    );
  }
}

/** Fails when the WGSL module reports any error or warning. */
export async function assertCompilesCleanly(k: Kernels, name: string, source: string): Promise<void> {
  const msgs = await k.compilationMessages(name, source);
  const bad = msgs.filter((m) => m.type !== "info");
  if (bad.length) {
    throw new Error(
      `${name} compile messages:\n` + bad.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`).join("\n"),
    );
  }
}

/**
 * A stand-in Kernels for the planners' pure tests: only the device limits and features a planner reads
 * (workgroup memory, invocations, subgroups, CPU adapter, legacy plans); it records nothing.
 */
export function fakeKernels(o: {
  storage?: number;
  invocations?: number;
  subgroupSize?: number;
  cpuAdapter?: boolean;
  legacy?: string[];
}): Kernels {
  const sg = o.subgroupSize ?? 0;
  return {
    device: {
      limits: {
        maxComputeWorkgroupStorageSize: o.storage ?? 49152,
        maxComputeInvocationsPerWorkgroup: o.invocations ?? 1024,
      },
    },
    features: {
      subgroups: sg > 0,
      subgroupSize: sg,
      cpuAdapter: o.cpuAdapter ?? false,
      legacy: new Set(o.legacy),
    },
  } as unknown as Kernels;
}
