// Opens the WebGPU device the engine runs on: the adapter's maxima as limits (a 7B model needs
// many large buffers), shader-f16/subgroups/timestamp-query when offered, and clear errors when
// there is no adapter at all.
import { Kernels } from "../kernels/mod.ts";

export class GpuError extends Error {
  override name = "GpuError";
}

export interface Gpu {
  device: GPUDevice;
  kernels: Kernels;
  adapterInfo: GPUAdapterInfo;
  /** Resolves when the device is lost (driver reset, out of memory, destroyed). */
  lost: Promise<GPUDeviceLostInfo>;
}

const NO_ADAPTER_HELP = "No WebGPU adapter found: Deno's WebGPU needs a Vulkan driver. On a machine " +
  "without a GPU install Mesa's lavapipe (apt-get install mesa-vulkan-drivers); in a container on NVIDIA " +
  "GPUs make sure libvulkan1 is installed and NVIDIA_DRIVER_CAPABILITIES includes graphics";

/**
 * On Linux, wgpu brings up its OpenGL backend (EGL and a second copy of the driver: Mesa's swrast_dri beside
 * lavapipe, or the vendor's GL beside its Vulkan) on every adapter request, although compute runs on the
 * Vulkan adapter. That stack is never used, and its threads (llvmpipe, the shader disk cache) stay until the
 * process exits, since the EGL display is never terminated (seen in `deno test`: started by the first
 * module, still there at exit). Unless a backend was chosen (DENO_WEBGPU_BACKEND), Linux processes ask for
 * Vulkan only; call this before the first `navigator.gpu.requestAdapter()` of the process.
 */
export function preferVulkan(): void {
  if (Deno.build.os !== "linux") return;
  try {
    if (Deno.env.get("DENO_WEBGPU_BACKEND") === undefined) Deno.env.set("DENO_WEBGPU_BACKEND", "vulkan");
  } catch {
    // No env permission: wgpu picks its backends itself.
  }
}

/** Opens the first adapter with its maximum limits. Set TRELLIS_NO_SUBGROUPS=1 to test the portable path. */
export async function openGpu(opts: { allowSubgroups?: boolean } = {}): Promise<Gpu> {
  preferVulkan();
  if (!("gpu" in navigator) || !navigator.gpu) throw new GpuError(NO_ADAPTER_HELP);
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new GpuError(NO_ADAPTER_HELP);
  const allowSubgroups = (opts.allowSubgroups ?? true) && Deno.env.get("TRELLIS_NO_SUBGROUPS") !== "1";
  const features: GPUFeatureName[] = [];
  for (const f of ["shader-f16", "timestamp-query"] as GPUFeatureName[]) {
    if (adapter.features.has(f)) features.push(f);
  }
  const l = adapter.limits;
  const requiredLimits: Record<string, number> = {
    maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
    maxBufferSize: l.maxBufferSize,
    maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
    maxComputeWorkgroupSizeY: l.maxComputeWorkgroupSizeY,
    maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
    maxUniformBufferBindingSize: l.maxUniformBufferBindingSize,
  };
  let device: GPUDevice;
  let subgroups = false;
  // The H100's adapter grants `subgroups` when asked although it does not list it (measured on the
  // H100 host, 2026-11).
  if (allowSubgroups) {
    try {
      device = await adapter.requestDevice({
        requiredFeatures: [...features, "subgroups" as GPUFeatureName],
        requiredLimits,
      });
      subgroups = device.features.has("subgroups");
    } catch {
      device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits });
    }
  } else {
    device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits });
  }
  // Deno reports the adapter's subgroup size range; subgroup kernels need one fixed size.
  const info = adapter.info as GPUAdapterInfo & { subgroupMinSize?: number; subgroupMaxSize?: number };
  const subgroupSize = subgroups && info.subgroupMinSize && info.subgroupMinSize === info.subgroupMaxSize
    ? info.subgroupMinSize
    : 0;
  const cpuAdapter = /llvmpipe|lavapipe|swiftshader/i.test(
    `${info.description} ${info.device} ${info.architecture}`,
  );
  // Comma-separated kernel names that keep their earlier plan (KernelFeatures.legacy), for A/B measurement.
  const legacy = new Set((Deno.env.get("TRELLIS_LEGACY_KERNELS") ?? "").split(",").filter(Boolean));
  const kernels = new Kernels(device, { subgroups, subgroupSize, cpuAdapter, legacy });
  // A validation error in a dispatch does not throw; it only surfaces here. Every one is a bug.
  let reported = 0;
  device.addEventListener("uncapturederror", (e) => {
    if (reported++ < 5) console.error(`WebGPU error: ${(e as GPUUncapturedErrorEvent).error.message}`);
  });
  return { device, kernels, adapterInfo: adapter.info, lost: device.lost };
}

/** One line naming the adapter, for logs. */
export function describeGpu(gpu: Gpu): string {
  const i = gpu.adapterInfo;
  const name = [i.vendor, i.architecture, i.device, i.description].filter((s) => s).join(" ");
  const f = gpu.kernels.features;
  return `${name || "unknown adapter"} (subgroups: ${
    f.subgroups ? `yes, size ${f.subgroupSize || "varies"}` : "no"
  }, max buffer ${(gpu.device.limits.maxBufferSize / 2 ** 30).toFixed(1)} GiB)`;
}

/** A storage buffer the host can write and copy from, `bytes` rounded up to 16 (at least 16). */
export function storageBuffer(device: GPUDevice, label: string, bytes: number): GPUBuffer {
  return device.createBuffer({
    label,
    size: Math.max(16, Math.ceil(bytes / 16) * 16),
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
  });
}
