// The kernel library's public surface: the core (pipeline cache, uniform arena) and every kernel's
// encode function, host-side layout helpers and plain TypeScript reference. The engine imports
// kernels only through this file.
export * from "./core.ts";
export * from "./attention/attention.ts";
export * from "./embedding/embedding.ts";
export * from "./gather/gather.ts";
export { hadamard, type HadamardOptions, hadamardScratchBytes } from "./hadamard/hadamard.ts";
export { hadamardFactor, hadKMatrix } from "./hadamard/had_tables.ts";
export { hadamardRef, hadamardRef64 } from "./hadamard/hadamard_ref.ts";
export * from "./matmul_f16/matmul_f16.ts";
export * from "./qtip/qtip.ts";
export * from "./qtip/qtip_layout.ts";
export * from "./qtip/qtip_ref.ts";
export * from "./rmsnorm/rmsnorm.ts";
export * from "./rope/rope.ts";
export * from "./sampling/sampling.ts";
export * from "./silu_mul/silu_mul.ts";
export * from "./penalties/penalties.ts";
export * from "./top_logprobs/top_logprobs.ts";
export * from "./transform/transform.ts";
export * from "./transform/transform_ref.ts";
