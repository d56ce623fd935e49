// Test doubles for the server: a scripted EngineHandle that honours AbortSignal and records what it
// was asked and what was aborted, and a byte-level TextCodec (one token per UTF-8 byte).

import type {
  EngineHandle,
  EngineState,
  EngineStats,
  GenerateRequest,
  ModelInfo,
  TokenEvent,
} from "../../engine/mod.ts";
import { TokenConstraint } from "../../engine/mod.ts";
import { seededRandom } from "./random.ts";
import type { ChatMessage, TextCodec, TextDetokenizer } from "../../text/mod.ts";

export const FAKE_BOS = 256;
export const FAKE_EOS = 257;
export const FAKE_EOT = 258;
const SPECIAL_TEXT: Record<number, string> = { [FAKE_BOS]: "<s>", [FAKE_EOS]: "</s>", [FAKE_EOT]: "<|eot|>" };
const SPECIAL_PATTERN = /(<s>|<\/s>|<\|eot\|>)/;

/** Token ids of `text` in the byte codec: its UTF-8 bytes. */
export function byteIds(text: string): number[] {
  return [...new TextEncoder().encode(text)];
}

class ByteDetokenizer implements TextDetokenizer {
  readonly #decoder = new TextDecoder("utf-8");
  readonly #skipSpecial: boolean;

  constructor(skipSpecial: boolean) {
    this.#skipSpecial = skipSpecial;
  }

  push(id: number): string {
    if (id < 256) return this.#decoder.decode(new Uint8Array([id]), { stream: true });
    const held = this.#decoder.decode();
    return held + (this.#skipSpecial ? "" : SPECIAL_TEXT[id] ?? "");
  }

  flush(): string {
    return this.#decoder.decode();
  }
}

/** Byte-level codec: ids 0..255 are bytes, 256 <s>, 257 </s>, 258 <|eot|>. */
export const byteCodec: TextCodec = {
  vocabSize: 259,
  eosIds: [FAKE_EOS],
  endOfTurnIds: [FAKE_EOT],
  encode(text, opts) {
    const ids = opts.addSpecialTokens ? [FAKE_BOS] : [];
    for (const part of text.split(SPECIAL_PATTERN)) {
      const special = Object.entries(SPECIAL_TEXT).find(([, t]) => t === part);
      if (special) ids.push(Number(special[0]));
      else ids.push(...byteIds(part));
    }
    return ids;
  },
  decode(ids, opts) {
    const detok = new ByteDetokenizer(opts?.skipSpecialTokens ?? false);
    return ids.map((id) => detok.push(id)).join("") + detok.flush();
  },
  renderChat(messages: readonly ChatMessage[], opts) {
    const tools = opts.tools?.length ? `tools: ${JSON.stringify(opts.tools)}<|eot|>` : "";
    const turns = messages.map((m) => {
      const calls = (m.tool_calls ?? []).map((c) => `${c.function.name}(${c.function.arguments})`).join("; ");
      const id = m.tool_call_id ? ` [${m.tool_call_id}]` : "";
      return `${m.role}${id}: ${m.content}${calls}<|eot|>`;
    }).join("");
    return `<s>${tools}${turns}${opts.addGenerationPrompt ? "assistant: " : ""}`;
  },
  newDetokenizer(_promptIds, opts) {
    return new ByteDetokenizer(opts?.skipSpecialTokens ?? true);
  },
  tokenText(id) {
    if (id >= 256) return SPECIAL_TEXT[id] ?? "";
    return id < 0x80 ? String.fromCharCode(id) : `<0x${id.toString(16).toUpperCase().padStart(2, "0")}>`;
  },
  tokenBytes(id) {
    return id < 256 ? [id] : byteIds(SPECIAL_TEXT[id] ?? "");
  },
  vocabulary() {
    const tokens = Array.from(
      { length: 259 },
      (_, id) => id < 256 ? `<0x${id.toString(16).toUpperCase().padStart(2, "0")}>` : "",
    );
    return { tokens, encoding: "byte_fallback" as const };
  },
};

/** Tokens a grammar random walk prefers half the time, so that walks end: quote, brackets, stop tokens. */
const CLOSERS = [34, 125, 93, FAKE_EOS, FAKE_EOT];

/**
 * A token `mask` allows (bit id & 31 of word id >> 5), for random walks through a grammar over the byte
 * codec: `preferred` when allowed; else, half the time, the first allowed closer; else a random allowed
 * printable ASCII byte or stop token (so the text stays valid UTF-8).
 */
export function pickAllowed(mask: Uint32Array, rnd: () => number, preferred?: number): number {
  const allows = (id: number) => ((mask[id >>> 5] >>> (id & 31)) & 1) === 1;
  if (preferred !== undefined && allows(preferred)) return preferred;
  if (rnd() < 0.5) {
    const closer = CLOSERS.find(allows);
    if (closer !== undefined) return closer;
  }
  const printable = [];
  for (let id = 0x20; id < 0x7f; id++) if (allows(id)) printable.push(id);
  for (const id of [FAKE_EOS, FAKE_EOT]) if (allows(id)) printable.push(id);
  if (printable.length === 0) {
    for (let id = 0; id < mask.length * 32; id++) if (allows(id)) return id;
    throw new Error("The mask allows no token");
  }
  return printable[Math.floor(rnd() * printable.length)];
}

export interface FakeEngineOptions {
  maxContext?: number;
  /** Token ids a request generates, in order; ending the script acts like EOS. Default: "Hello world". */
  script?: (req: GenerateRequest) => number[];
  /** Pause before each event, in ms (abortable). */
  delayMs?: number;
  /** Ids per event. */
  idsPerEvent?: number;
  state?: EngineState;
  /** Each sequence waits for this before its first token (lets tests fill the queue). */
  gate?: Promise<void>;
  /** Fail with finishReason "error" after this many tokens. */
  failAfter?: number;
  /** Like the Worker engine: reading `info` throws while the state is "loading". */
  infoAfterLoad?: boolean;
  /** Tokens per KV block (default 4) and blocks in the cache (default 1024), for stats(). */
  kvBlockSize?: number;
  kvBlocks?: number;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

function untilAborted(gate: Promise<void>, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    signal.addEventListener("abort", () => resolve(), { once: true });
    gate.then(() => resolve());
  });
}

export class FakeEngine implements EngineHandle {
  readonly #info: ModelInfo;
  /** Every request generate() was called with, in order. */
  readonly requests: GenerateRequest[] = [];
  /** Ids of sequences whose AbortSignal fired before they finished. */
  readonly aborted: string[] = [];
  /** Ids of sequences currently generating. */
  readonly active = new Set<string>();
  currentState: EngineState;
  closed = false;
  /** KV blocks each live sequence holds: its prompt and generated tokens, rounded up to whole blocks. */
  readonly kvBlocksBySeq = new Map<string, number>();
  /** Most KV blocks in use at once. */
  kvBlocksPeak = 0;
  readonly #opts: FakeEngineOptions;

  constructor(opts: FakeEngineOptions = {}) {
    this.#opts = opts;
    this.currentState = opts.state ?? "ready";
    this.#info = {
      source: "/models/fake-llama",
      vocabSize: byteCodec.vocabSize,
      maxContext: opts.maxContext ?? 256,
      bosId: FAKE_BOS,
      eosIds: [FAKE_EOS],
      quantization: "fp16",
    };
  }

  get info(): ModelInfo {
    if (this.#opts.infoAfterLoad && this.currentState === "loading") {
      throw new Error("Model is still loading");
    }
    return this.#info;
  }

  state(): EngineState {
    return this.currentState;
  }

  get kvBlocksUsed(): number {
    let used = 0;
    for (const n of this.kvBlocksBySeq.values()) used += n;
    return used;
  }

  stats(): EngineStats {
    const total = this.#opts.kvBlocks ?? 1024;
    return {
      running: this.active.size,
      waiting: 0,
      kvUsage: this.kvBlocksUsed / total,
      kvBlocksTotal: total,
      kvBlocksUsed: this.kvBlocksUsed,
      promptTokens: this.requests.reduce((sum, r) => sum + r.promptIds.length, 0),
      generationTokens: 0,
      prefixCacheQueries: this.requests.reduce((sum, r) => sum + r.promptIds.length, 0),
      prefixCacheHits: 0,
      preemptions: 0,
    };
  }

  #holdKv(id: string, tokens: number): void {
    this.kvBlocksBySeq.set(id, Math.ceil(tokens / (this.#opts.kvBlockSize ?? 4)));
    this.kvBlocksPeak = Math.max(this.kvBlocksPeak, this.kvBlocksUsed);
  }

  async *generate(
    req: GenerateRequest,
    signal: AbortSignal = new AbortController().signal,
  ): AsyncIterable<TokenEvent> {
    this.requests.push(req);
    this.active.add(req.id);
    let finished = false;
    let constraint: TokenConstraint | null = null;
    try {
      const submitted = performance.now();
      if (this.#opts.gate) await untilAborted(this.#opts.gate, signal);
      // Like the engine: the wait before admission rides on the first event.
      let queuedMs: number | undefined = performance.now() - submitted;
      if (!signal.aborted) this.#holdKv(req.id, req.promptIds.length);
      const script = this.#opts.script?.(req) ?? byteIds("Hello world");
      const perEvent = this.#opts.idsPerEvent ?? 1;
      // Constrained requests follow the script while their grammar allows it, then walk the grammar at
      // random (seeded by the request's seed), as a model would pick among the allowed tokens.
      constraint = req.constraint ? new TokenConstraint(req.constraint) : null;
      const rnd = seededRandom(req.sampling.seed);
      let generated = 0;
      let pos = 0;
      while (true) {
        await sleep(this.#opts.delayMs ?? 1, signal);
        if (signal.aborted) {
          finished = true;
          yield { ids: [], finishReason: "abort" };
          return;
        }
        if (this.#opts.failAfter !== undefined && generated >= this.#opts.failAfter) {
          finished = true;
          yield { ids: [], finishReason: "error", error: "Fake engine failure" };
          return;
        }
        const ids: number[] = [];
        let finishReason: TokenEvent["finishReason"];
        let error: string | undefined;
        while (ids.length < perEvent && finishReason === undefined) {
          let id: number;
          if (constraint) {
            let mask: Uint32Array;
            try {
              mask = await constraint.mask();
            } catch (e) {
              finishReason = "error";
              error = `Constrained decoding failed: ${(e as Error).message}`;
              break;
            }
            id = pickAllowed(mask, rnd, script[pos]);
            pos = id === script[pos] ? pos + 1 : script.length;
          } else {
            if (pos >= script.length) {
              finishReason = "stop";
              break;
            }
            id = script[pos++];
          }
          const isStop = req.stopTokenIds.includes(id) &&
            (constraint !== null || (!req.ignoreEos && generated >= (req.minTokens ?? 0)));
          if (isStop) {
            finishReason = "stop";
            break;
          }
          ids.push(id);
          generated++;
          constraint?.advance([id]);
          this.#holdKv(req.id, req.promptIds.length + generated);
          if (generated >= req.maxTokens) finishReason = "length";
        }
        const event: TokenEvent = {
          ids,
          ...(error ? { error } : {}),
          ...(queuedMs !== undefined ? { queuedMs } : {}),
        };
        queuedMs = undefined;
        if (req.logprobs !== undefined) event.logprobs = ids.map((id) => -id / 100);
        if ((req.logprobs ?? 0) > 0) {
          // Alternatives: the chosen id, then the ids after it, each a little less likely.
          event.topLogprobs = ids.map((id) =>
            Array.from({ length: req.logprobs! }, (_, i) => [id + i, -id / 100 - i] as [number, number])
          );
        }
        if (finishReason !== undefined) {
          event.finishReason = finishReason;
          finished = true;
        }
        yield event;
        if (finished) return;
      }
    } finally {
      constraint?.close();
      if (!finished || signal.aborted) this.aborted.push(req.id);
      this.active.delete(req.id);
      this.kvBlocksBySeq.delete(req.id);
    }
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}
