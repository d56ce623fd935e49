// The sampler: the per-slot logits state on the GPU (token counts for the penalties, logit_bias, each
// step's sampling settings, top-logprob outputs) and the one chain every sampled logits row goes through,
// after prefill and after each decode step:
//
//   penalties, a constrained row's token mask and logit_bias -> top logprobs (raw, after penalties) ->
//   sample (temperature, top-k, top-p, min-p, seeded by (seed, counter)) -> token id + its logprob
//
// Each stage is a kernel (kernels/penalties, top_logprobs, sampling); the logits never leave the GPU.
// Compare gpt-fast's generate.py (logits_to_probs, sample) and vLLM's v1 Sampler.
import {
  type Kernels,
  LOGIT_BIAS_BYTES,
  packLogitBias,
  packPenaltyRows,
  packSamplingParams,
  penaltiesApply,
  penaltiesCount,
  penaltiesMarkPrompt,
  PENALTY_NO_INPUT,
  PENALTY_NO_MASK,
  type PenaltyRow,
  sample,
  TOP_LOGPROBS_MAX,
  topLogprobs,
} from "../kernels/mod.ts";
import type { SamplerBytes } from "./buffer_plan.ts";
import { storageBuffer } from "./gpu.ts";
import { MAX_LOGIT_BIAS, type SamplingParams } from "./types.ts";

/** Whether sampling uses penalties or logit_bias (a step then records the logits-processing dispatches). */
export function usesPenalties(s: SamplingParams): boolean {
  return !!(s.presencePenalty || s.frequencyPenalty || (s.repetitionPenalty ?? 1) !== 1 ||
    s.logitBias?.length);
}

/** Whether a row goes through the logits-processing kernel: penalties, logit_bias or a token mask. */
export function processesLogits(r: SampleRow): boolean {
  return r.masked === true || usesPenalties(r.sampling);
}

/** One logits row of a step: the sequence it belongs to and where its results go. */
export interface SampleRow {
  /** The sequence's slot (its row of the per-slot state). */
  slot: number;
  sampling: SamplingParams;
  /** Alternatives to report with the sampled token (0: none). */
  topLogprobs: number;
  /** Tokens the sequence generated before this one: with the seed, picks the row's random draw. */
  counter: number;
  /** Where the sampled id and its logprob land in the step's `tokens` and `logprobs`. */
  outIndex: number;
  /** Decode: where this step's input token (the one sampled last) sits in `inputs`, to be counted. */
  inputIndex?: number;
  /** Sample under the slot's token mask (set by `setMask`). */
  masked?: boolean;
}

/** One step of the chain: rows in logits-row order, as uploaded by `writeSteps`. */
export interface SampleStep {
  rows: readonly SampleRow[];
  /** Which of the uploaded steps these rows are. */
  step: number;
  /** f32 (rows, vocabSize). */
  logits: GPUBuffer;
  /** Decode: the ids each row's inputIndex points into, counted into the penalties before they apply. */
  inputs?: GPUBuffer;
  /** u32 and f32: receive each row's sampled id and raw logprob at its outIndex. */
  tokens: GPUBuffer;
  logprobs: GPUBuffer;
  /** Top logprobs go to the step's region (decode) or to each row's slot region (prefill). */
  topInto: "step" | "slot";
  /** Rows per step in the uploaded layout (penalty rows, top-logprob regions): the round's sequences,
   * when later steps have fewer rows than the first (default: this step's rows). */
  stride?: number;
}

export class Sampler {
  readonly #kernels: Kernels;
  readonly #device: GPUDevice;
  readonly #vocab: number;
  readonly #bytes: SamplerBytes;
  readonly #params: GPUBuffer; // RowParams: one 256-byte aligned segment per step
  readonly #counts: GPUBuffer; // u32 (maxSeqs, vocab): generated-token counts, bit 31 = in the prompt
  readonly #penaltyRows: GPUBuffer; // PenaltyRow: row j of step s at s * rows + j
  readonly #logitBias: GPUBuffer; // (id, value) pairs, MAX_LOGIT_BIAS per slot
  readonly #tokenMask: GPUBuffer; // u32 (maxSeqs, maskWords): a constrained slot's allowed next tokens
  readonly #maskWords: number;
  /** (id, logprob) pairs as u32: per decode step (rows x k pairs), then TOP_LOGPROBS_MAX per slot. */
  readonly topLogprobs: GPUBuffer;

  constructor(o: { kernels: Kernels; vocabSize: number; bytes: SamplerBytes }) {
    this.#kernels = o.kernels;
    this.#device = o.kernels.device;
    this.#vocab = o.vocabSize;
    this.#bytes = o.bytes;
    const buf = (label: string, bytes: number) => storageBuffer(this.#device, label, bytes);
    this.#params = buf("samplingParams", o.bytes.paramsBytes);
    this.#counts = buf("penaltyCounts", o.bytes.countsBytes);
    this.#penaltyRows = buf("penaltyRows", o.bytes.penaltyRowsBytes);
    this.#logitBias = buf("logitBias", o.bytes.logitBiasBytes);
    this.#tokenMask = buf("tokenMask", o.bytes.tokenMaskBytes);
    this.#maskWords = Math.ceil(o.vocabSize / 32);
    this.topLogprobs = buf("topLogprobs", o.bytes.topLogprobsBytes);
  }

  /**
   * Readies a slot for a new sequence: uploads its logit_bias and clears its token counts, or for a
   * sequence resumed after preemption, counts what it had generated so its penalties continue.
   */
  startSlot(slot: number, sampling: SamplingParams, generated: readonly number[]): void {
    if (!usesPenalties(sampling)) return;
    const V = this.#vocab;
    const bias = sampling.logitBias ?? [];
    if (bias.length) {
      const packed = packLogitBias(bias.map(([id, value]) => ({ id, value })));
      this.#device.queue.writeBuffer(this.#logitBias, slot * MAX_LOGIT_BIAS * LOGIT_BIAS_BYTES, packed);
    }
    if (generated.length) {
      const row = new Uint32Array(V);
      for (const t of generated) if (t < V) row[t]++;
      this.#device.queue.writeBuffer(this.#counts, slot * V * 4, row);
      return;
    }
    const enc = this.#device.createCommandEncoder({ label: "penalties-reset" });
    enc.clearBuffer(this.#counts, slot * V * 4, V * 4);
    this.#device.queue.submit([enc.finish()]);
  }

  /** Uploads a constrained slot's mask for its next token: bit (id & 31) of word (id >> 5) = id allowed. */
  setMask(slot: number, mask: Uint32Array<ArrayBuffer>): void {
    if (mask.length !== this.#maskWords) {
      throw new Error(`Token mask has ${mask.length} words; the vocabulary needs ${this.#maskWords}`);
    }
    this.#device.queue.writeBuffer(this.#tokenMask, slot * this.#maskWords * 4, mask);
  }

  /** The repetition penalty covers the prompt: marks the `n` prompt tokens at `tokensOffset` of `tokens`. */
  markPrompt(
    pass: GPUComputePassEncoder,
    o: { slot: number; sampling: SamplingParams; tokens: GPUBuffer; tokensOffset: number; n: number },
  ): void {
    if ((o.sampling.repetitionPenalty ?? 1) === 1) return;
    penaltiesMarkPrompt(this.#kernels, pass, {
      counts: this.#counts,
      tokens: o.tokens,
      tokensOffset: o.tokensOffset,
      n: o.n,
      slot: o.slot,
      vocab: this.#vocab,
    });
  }

  /** Uploads the settings of every step about to be encoded (a decode round's, or prefill's one step). */
  writeSteps(steps: readonly (readonly SampleRow[])[]): void {
    const stepBytes = this.#bytes.paramsBytesPerStep;
    const params = new Uint8Array(steps.length * stepBytes);
    steps.forEach((rows, st) =>
      params.set(new Uint8Array(packSamplingParams(rows.map(rowParams))), st * stepBytes)
    );
    this.#device.queue.writeBuffer(this.#params, 0, params);
    if (!steps.some((rows) => rows.some(processesLogits))) return;
    // Step s's rows start at s * stride, stride = the first step's rows (later steps may have fewer).
    const stride = steps[0].length;
    const rows = steps.flatMap((st) => [...st, ...Array(stride - st.length).fill(st[0] ?? steps[0][0])]);
    this.#device.queue.writeBuffer(
      this.#penaltyRows,
      0,
      packPenaltyRows(rows.map((r) => this.#penaltyRow(r))),
    );
  }

  /** Records the chain for one step's rows. */
  encode(pass: GPUComputePassEncoder, s: SampleStep): void {
    const kernels = this.#kernels;
    const n = s.rows.length;
    const stride = s.stride ?? n;
    const vocab = this.#vocab;
    if (s.rows.some(processesLogits)) {
      const rowsOffset = s.step * stride;
      if (s.inputs) {
        // Step s consumes the token sampled last: counting it as it goes in counts each generated token once.
        penaltiesCount(kernels, pass, {
          counts: this.#counts,
          rows: this.#penaltyRows,
          rowsOffset,
          inputTokens: s.inputs,
          nRows: n,
          vocab,
        });
      }
      penaltiesApply(kernels, pass, {
        logits: s.logits,
        rows: this.#penaltyRows,
        rowsOffset,
        nRows: n,
        counts: this.#counts,
        bias: this.#logitBias,
        mask: this.#tokenMask,
        vocab,
      });
    }
    if (s.topInto === "step") {
      const nTop = Math.max(0, ...s.rows.map((r) => r.topLogprobs));
      if (nTop > 0) {
        topLogprobs(kernels, pass, {
          logits: s.logits,
          rows: n,
          vocab,
          k: nTop,
          out: this.topLogprobs,
          outOffset: s.step * stride * nTop * 2,
        });
      }
    } else {
      s.rows.forEach((r, i) => {
        if (r.topLogprobs === 0) return;
        topLogprobs(kernels, pass, {
          logits: s.logits,
          logitsOffset: i * vocab,
          rows: 1,
          vocab,
          k: r.topLogprobs,
          out: this.topLogprobs,
          outOffset: this.slotTopOffset(r.slot),
        });
      });
    }
    const stepBytes = this.#bytes.paramsBytesPerStep;
    sample(kernels, pass, {
      logits: s.logits,
      logitsStride: vocab,
      params: { buffer: this.#params, offset: s.step * stepBytes, size: stepBytes },
      rows: n,
      vocab,
      tokens: s.tokens,
      logprobs: s.logprobs,
    });
  }

  /** Word of `topLogprobs` where a slot's prefill alternatives start. */
  slotTopOffset(slot: number): number {
    return this.#bytes.prefillTopBaseWords + slot * TOP_LOGPROBS_MAX * 2;
  }

  #penaltyRow(r: SampleRow): PenaltyRow {
    return {
      presence: r.sampling.presencePenalty ?? 0,
      frequency: r.sampling.frequencyPenalty ?? 0,
      repetition: r.sampling.repetitionPenalty ?? 1,
      biasCount: r.sampling.logitBias?.length ?? 0,
      biasOffset: r.slot * MAX_LOGIT_BIAS,
      slot: r.slot,
      inputIndex: r.inputIndex ?? PENALTY_NO_INPUT,
      maskOffset: r.masked ? r.slot * this.#maskWords : PENALTY_NO_MASK,
    };
  }
}

function rowParams(r: SampleRow) {
  return { ...r.sampling, counter: r.counter, outIndex: r.outIndex };
}

/** `n` (id, logprob) pairs stored as u32 words from `at`, dropping padding past the vocabulary. */
export function readTopPairs(words: Uint32Array, at: number, n: number): [number, number][] {
  const f = new Float32Array(words.buffer, words.byteOffset, words.length);
  const out: [number, number][] = [];
  for (let i = 0; i < n; i++) {
    const id = words[at + 2 * i];
    if (id !== 0xffffffff) out.push([id, f[at + 2 * i + 1]]);
  }
  return out;
}
