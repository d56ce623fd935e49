// planBuffers() without a GPU: the KV cache default and its caps, block-table and RoPE room for a round's
// overshoot, and the per-step segments the sampler binds at offsets.
import assert from "node:assert/strict";
import { type ModelDims, planBuffers, type PlanLimits, seg } from "./buffer_plan.ts";
import { EngineError } from "./errors.ts";

/** Llama 2 7B's dimensions. */
const LLAMA2_7B: ModelDims = {
  dim: 4096,
  hiddenDim: 11008,
  nLayers: 32,
  nHeads: 32,
  nKvHeads: 32,
  headDim: 128,
  vocabSize: 32000,
};
const LIMITS: PlanLimits = {
  maxContext: 4096,
  maxSeqs: 64,
  maxBatchTokens: 512,
  maxRoundSteps: 32,
  maxBindingBytes: 2 ** 31 - 4,
};

Deno.test("planBuffers() sizes the default KV cache by the binding limit and the 16 GiB cap", () => {
  // 7B: 8 KiB of K per token and layer; 16 GiB over K and V of 32 layers is 32768 tokens, below both
  // every slot at full context (262144) and one binding (262143).
  const p = planBuffers(LLAMA2_7B, LIMITS);
  assert.equal(p.kvTokens, 32768);
  assert.equal(p.numBlocks, 32768 / 16);
  assert.equal(p.kvLayerBytes, p.numBlocks * 16 * 32 * 128 * 2);
  // A small model fits every slot at full context.
  const small = planBuffers({ ...LLAMA2_7B, nLayers: 2, nKvHeads: 2, headDim: 64 }, {
    ...LIMITS,
    maxSeqs: 4,
  });
  assert.equal(small.kvTokens, 4 * 4096);
  // A small binding limit caps it.
  const bound = planBuffers(LLAMA2_7B, { ...LIMITS, maxBindingBytes: 128 * 2 ** 20 });
  assert.equal(bound.kvTokens, 16384);
});

Deno.test("planBuffers() refuses an explicit KV cache past one storage binding, naming the flag", () => {
  assert.throws(
    () => planBuffers(LLAMA2_7B, { ...LIMITS, kvTokens: 300000 }),
    (e: Error) =>
      e instanceof EngineError &&
      /A KV cache of 300000 tokens needs 2457600000 bytes per layer; the device binds at most 2147483644 \(lower --kv-cache-tokens\)/
        .test(e.message),
  );
});

Deno.test("planBuffers() refuses a prefill pass whose activations no storage binding holds, naming the flag", () => {
  // 7B's stacked gate/up output is 22016 floats a token: 24,385 tokens fit 2 GiB, 24,386 do not.
  assert.doesNotThrow(() => planBuffers(LLAMA2_7B, { ...LIMITS, maxBatchTokens: 24385 }));
  assert.throws(
    () => planBuffers(LLAMA2_7B, { ...LIMITS, maxBatchTokens: 24386 }),
    (e: Error) =>
      e instanceof EngineError &&
      /A prefill pass of 24386 tokens needs 2147528704 bytes for its widest activation buffer; the device binds at most 2147483644 \(lower --max-batch-tokens\)/
        .test(e.message),
  );
});

Deno.test("planBuffers() leaves room for a round's overshoot in block tables and the RoPE table", () => {
  const p = planBuffers(LLAMA2_7B, { ...LIMITS, kvTokens: 256 });
  assert.equal(p.maxBlocksPerSeq, Math.ceil((4096 + 32) / 16));
  assert.equal(p.numBlocks, p.maxBlocksPerSeq, "at least one full row of blocks, whatever kvTokens says");
  assert.equal(p.ropeMaxPos, 4096 + 32);
  assert.equal(p.blockTableBytes, 64 * p.maxBlocksPerSeq * 4);
  assert.equal(p.historyBytes, 33 * 64 * 4);
});

Deno.test("planBuffers() gives every activation maxBatchTokens rows and logits one row per slot", () => {
  const p = planBuffers(LLAMA2_7B, { ...LIMITS, kvTokens: 256 });
  assert.equal(p.activations.x, 512 * 4096 * 4);
  assert.equal(p.activations.xin, 512 * 3 * 4096 * 4, "q, k and v inputs of dim each");
  assert.equal(p.activations.y, 512 * 2 * 11008 * 4, "gate and up outputs side by side");
  assert.equal(p.activations.h, 512 * 11008 * 4);
  assert.equal(p.activations.lastNormed, 512 * 4096 * 4, "logit rows: max(maxBatchTokens, maxSeqs)");
  assert.equal(p.logitsBytes, 64 * 32000 * 4);
  assert.equal(p.prefillTokensBytes, 512 * 4);
  assert.equal(p.metaWords, Math.max(34 * seg(64), 2 * seg(512) + seg(512)));
});

Deno.test("planBuffers() aligns each step's sampling settings to 256 bytes and puts prefill's top logprobs last", () => {
  for (const maxSeqs of [1, 3, 8, 64]) {
    const s = planBuffers(LLAMA2_7B, { ...LIMITS, maxSeqs, kvTokens: 256 }).sampler;
    assert.equal(s.paramsBytesPerStep % 256, 0);
    assert.ok(s.paramsBytesPerStep >= maxSeqs * 32);
    assert.equal(s.paramsBytes, 33 * s.paramsBytesPerStep);
    assert.equal(s.prefillTopBaseWords, 32 * maxSeqs * 20 * 2);
    assert.equal(s.topLogprobsBytes, (s.prefillTopBaseWords + maxSeqs * 20 * 2) * 4);
  }
});
