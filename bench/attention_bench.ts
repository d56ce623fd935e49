// `deno run -A bench/attention_bench.ts [--arch llama2-7b] [--contexts 640,4096] [--seqs 1,16]
// [--partitions default,32,64,128,256] [--prefill 512,2048] [--json OUT]`: the decode attention (split kernel +
// reduce, as a decode step runs them) at a model's head shape, one query token per sequence at the last
// position of each sequence's context, against the streaming read of the same run; with --prefill, instead,
// the causal prefill attention of one N-token prompt from position 0 under every tile plan that fits the
// device (TFLOP/s = 4 x N^2 / 2 x head dim x heads / time, the causal half of QK^T and PV). Effective GB/s counts the K and V bytes the
// step must read (seqs x context x 2 x kv heads x head dim x 2 bytes). Each sequence's blocks are spread over
// the cache (every sequence gets its own blocks, in a shuffled order), as a serving engine's are.
import { parseArgs } from "node:util";
import { describeGpu, openGpu } from "../engine/gpu.ts";
import {
  attentionDecode,
  attentionPrefill,
  attentionScratchBytes,
  decodePartitionSize,
  planPrefill,
  PREFILL_SHAPES,
  prefillKernelName,
  prefillPlanOf,
  prefillSmemBytes,
} from "../kernels/mod.ts";
import { GpuTimer } from "./_timing.ts";
import { measureStreamRead } from "./kernels_bench.ts";
import { type ArchName, ARCHS } from "./synth.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    arch: { type: "string", default: "llama2-7b" },
    contexts: { type: "string", default: "640,4096" },
    seqs: { type: "string", default: "1,16" },
    partitions: { type: "string", default: "default,32,64,128,256" },
    prefill: { type: "string" },
    json: { type: "string" },
  },
});
const arch = ARCHS[values.arch as ArchName];
if (!arch) throw new Error(`Unknown --arch ${values.arch}: expected one of ${Object.keys(ARCHS).join(", ")}`);
const list = (s: string) => s.split(",").map((v) => v.trim()).filter(Boolean);
const contexts = list(values.contexts).map(Number);
const seqCounts = list(values.seqs).map(Number);
const partitions = list(values.partitions).map((p) => p === "default" ? null : Number(p));

const gpu = await openGpu();
const k = gpu.kernels, dev = gpu.device;
const timer = new GpuTimer(k);
const storage = (bytes: number) =>
  dev.createBuffer({
    size: Math.max(16, Math.ceil(bytes / 16) * 16),
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
  });

// Streaming read of 1 GiB after a warm-up (kernels_bench.ts): the ceiling for the KV reads.
const { gbps: streamGBps } = await measureStreamRead(k, timer, {
  streamBytes: 1 << 30,
  targetMs: 20,
  warmupMs: 500,
});
console.log(`streaming read: ${streamGBps.toFixed(0)} GB/s`);

const hd = arch.dim / arch.nHeads, nHeads = arch.nHeads, nKv = arch.nKvHeads;
const blockSize = 16;
const rows: Record<string, number | string>[] = [];
// xorshift32, restarted for each case: the cache's contents and the order of its blocks.
let state = 0;
const next = () => {
  state ^= state << 13;
  state ^= state >>> 17;
  state ^= state << 5;
  return state >>> 0;
};
/** A K and a V cache of `numBlocks` blocks holding the same small random halves (exponent bits cleared: no
 * inf or NaN), written in pieces of at most 4 Mi words. */
function randomKv(numBlocks: number): [GPUBuffer, GPUBuffer] {
  const words = numBlocks * nKv * blockSize * hd / 2;
  const kCache = storage(words * 4), vCache = storage(words * 4);
  const fill = new Uint32Array(Math.min(words, 1 << 22));
  for (let i = 0; i < fill.length; i++) fill[i] = next() & 0x33ff33ff;
  for (let at = 0; at < words; at += fill.length) {
    const n = Math.min(fill.length, words - at);
    dev.queue.writeBuffer(kCache, at * 4, fill, 0, n);
    dev.queue.writeBuffer(vCache, at * 4, fill, 0, n);
  }
  return [kCache, vCache];
}

/** The queries of T tokens (all heads) and their output rows. */
function queryRows(T: number): [GPUBuffer, GPUBuffer] {
  const q = storage(T * nHeads * hd * 4), out = storage(T * nHeads * hd * 4);
  dev.queue.writeBuffer(q, 0, new Float32Array(T * nHeads * hd).map((_, i) => Math.sin(i) * 0.1));
  return [q, out];
}

const prefillLens = values.prefill === undefined ? [] : list(values.prefill).map(Number);
for (const N of prefillLens) {
  state = 12345;
  const numBlocks = Math.ceil(N / blockSize);
  const [kCache, vCache] = randomKv(numBlocks);
  const table = storage(numBlocks * 4);
  dev.queue.writeBuffer(table, 0, Uint32Array.from({ length: numBlocks }, (_, i) => i));
  const seqIdx = storage(N * 4), pos = storage(N * 4);
  dev.queue.writeBuffer(seqIdx, 0, new Uint32Array(N));
  dev.queue.writeBuffer(pos, 0, Uint32Array.from({ length: N }, (_, i) => i));
  const [q, out] = queryRows(N);
  const flops = 4 * (N * (N + 1) / 2) * hd * nHeads;
  const budget = dev.limits.maxComputeWorkgroupStorageSize;
  const chosen = planPrefill(hd, nHeads / nKv, budget);
  for (const shape of PREFILL_SHAPES) {
    const plan = prefillPlanOf(shape, hd, nHeads / nKv);
    if (prefillSmemBytes(plan) > budget) continue;
    const encode = (p: GPUComputePassEncoder) =>
      attentionPrefill(k, p, {
        q,
        out,
        kCache,
        vCache,
        tokenSeq: seqIdx,
        tokenPos: pos,
        blockTable: table,
        T: N,
        nHeads,
        nKvHeads: nKv,
        headDim: hd,
        blockSize,
        maxBlocksPerSeq: numBlocks,
        prefillPlan: plan,
      });
    await timer.perDispatch(encode, 3, 1);
    const reps = await timer.repsFor(encode, 10);
    const us = (await timer.perDispatch(encode, reps, 2)) * 1e3;
    const name = prefillKernelName(plan) +
      (prefillKernelName(chosen) === prefillKernelName(plan) ? " (default)" : "");
    const row = { prefill: N, plan: name, us, tflops: flops / (us * 1e-6) / 1e12 };
    rows.push(row);
    console.log(
      `prefill attention ${values.arch} ${N} tokens ${name}: ${us.toFixed(1)} us, ${
        row.tflops.toFixed(2)
      } TFLOP/s`,
    );
  }
  for (const b of [kCache, vCache, table, seqIdx, pos, q, out]) b.destroy();
}
for (const ctx of prefillLens.length ? [] : contexts) {
  for (const S of seqCounts) {
    state = 12345;
    const perSeq = Math.ceil(ctx / blockSize);
    const numBlocks = S * perSeq;
    const [kCache, vCache] = randomKv(numBlocks);
    // Sequence j's blocks: a shuffled share of the cache.
    const order = Array.from({ length: numBlocks }, (_, i) => i);
    for (let i = order.length - 1; i > 0; i--) {
      const j = next() % (i + 1);
      [order[i], order[j]] = [order[j], order[i]];
    }
    const table = storage(numBlocks * 4);
    dev.queue.writeBuffer(table, 0, Uint32Array.from(order));
    const seqIdx = storage(S * 4), pos = storage(S * 4);
    dev.queue.writeBuffer(seqIdx, 0, Uint32Array.from({ length: S }, (_, j) => j));
    dev.queue.writeBuffer(pos, 0, new Uint32Array(S).fill(ctx - 1));
    const [q, out] = queryRows(S);
    const kvBytes = S * ctx * 2 * nKv * hd * 2;
    for (const part of partitions) {
      const partitionSize = part ?? decodePartitionSize(S * nKv, ctx);
      const scratch = storage(
        attentionScratchBytes({ T: S, nHeads, headDim: hd, maxContext: ctx, partitionSize }),
      );
      const encode = (p: GPUComputePassEncoder) =>
        attentionDecode(k, p, {
          q,
          out,
          kCache,
          vCache,
          tokenSeq: seqIdx,
          tokenPos: pos,
          blockTable: table,
          T: S,
          nHeads,
          nKvHeads: nKv,
          headDim: hd,
          blockSize,
          maxBlocksPerSeq: perSeq,
          maxContext: ctx,
          scratch,
          partitionSize,
        });
      await timer.perDispatch(encode, 10, 1);
      const reps = await timer.repsFor(encode, 10);
      const us = (await timer.perDispatch(encode, reps, 5)) * 1e3;
      const gbps = kvBytes / (us * 1e-6) / 1e9;
      const row = {
        context: ctx,
        seqs: S,
        partition: part === null ? `default (${partitionSize})` : String(partitionSize),
        us,
        kvBytes,
        gbps,
        fractionOfStream: gbps / streamGBps,
      };
      rows.push(row);
      console.log(
        `attention ${values.arch} context ${ctx} seqs ${S} partition ${row.partition}: ${
          us.toFixed(1)
        } us, ` +
          `${gbps.toFixed(0)} GB/s (${(100 * gbps / streamGBps).toFixed(0)}% of stream read)`,
      );
      scratch.destroy();
    }
    for (const b of [kCache, vCache, table, seqIdx, pos, q, out]) b.destroy();
  }
}
if (values.json) {
  await Deno.writeTextFile(
    values.json,
    JSON.stringify({ adapter: describeGpu(gpu), arch: values.arch, streamGBps, rows }, null, 2) + "\n",
  );
}
dev.destroy();
