// Generated ids -> text, one token at a time, for streaming. Sits after the sampler: each push() returns
// the text that the new token completes, so a client never sees half a UTF-8 sequence.
//
// Design note. The tokenizer's decoder chain (tokenizer.decoderSteps) is run as a stream: element-wise
// steps (Replace, Strip, Metaspace) per token, then the byte stage, then whole-text steps (a leading
// Strip). Byte-level tokens (Llama 3) feed a UTF-8 decoder that holds back an incomplete trailing
// sequence. `<0xXX>` tokens (Llama 2's byte fallback) are held as a run until a non-byte token ends it,
// because HF's ByteFallback turns a whole run into U+FFFD per byte when any part of it is invalid. The
// text of the prompt is streamed first and dropped; whatever decode(prompt) showed but the stream had not
// yet emitted (a held run or incomplete tail) is kept as a "debt" and cut from the first output, so that
// the outputs concatenate to decode(prompt + generated) minus decode(prompt).

import type { DecoderStep, Tokenizer } from "./tokenizer.ts";
import {
  applyElementStep,
  byteLevelBytes,
  byteTokenValue,
  decodeByteRun,
  decodeUtf8Lossy,
} from "./_tokenizer_pipeline.ts";

export interface DetokenizerOptions {
  /** Leave special tokens (EOS, chat headers) out of the text. Default true. */
  skipSpecial?: boolean;
}

export class IncrementalDetokenizer {
  #tokenizer: Tokenizer;
  #skipSpecial: boolean;
  #stream: DecodeStream;
  /** Text decode(prompt) ends with that the stream has not emitted yet. */
  #debt: string;

  constructor(tokenizer: Tokenizer, promptIds: number[] = [], opts: DetokenizerOptions = {}) {
    this.#tokenizer = tokenizer;
    this.#skipSpecial = opts.skipSpecial ?? true;
    this.#stream = new DecodeStream(tokenizer.decoderSteps);
    for (const id of promptIds) {
      const token = this.#token(id);
      if (token !== undefined) this.#stream.push(token);
    }
    this.#debt = this.#stream.pending();
  }

  /** Adds one generated id; returns the text it completes ("" while bytes are held back). */
  push(id: number): string {
    const token = this.#token(id);
    return token === undefined ? "" : this.#settle(this.#stream.push(token));
  }

  /** Ends the sequence: returns held-back text, with U+FFFD for bytes that never completed. */
  flush(): string {
    return this.#settle(this.#stream.flush());
  }

  #token(id: number): string | undefined {
    if (this.#skipSpecial && this.#tokenizer.isSpecial(id)) return undefined;
    return this.#tokenizer.idToToken(id);
  }

  /** Cuts the prompt's debt from the front of `text`. */
  #settle(text: string): string {
    if (this.#debt === "" || text === "") return text;
    if (text.startsWith(this.#debt)) {
      text = text.slice(this.#debt.length);
      this.#debt = "";
      return text;
    }
    if (this.#debt.startsWith(text)) {
      this.#debt = this.#debt.slice(text.length);
      return "";
    }
    // The generated tokens changed how the prompt's tail decodes (e.g. completed its last character):
    // emit from the first code point that differs.
    const shared = commonPrefixLength(this.#debt, text);
    this.#debt = "";
    return text.slice(shared);
  }
}

/** Length in UTF-16 units of the longest common prefix of whole code points. */
function commonPrefixLength(a: string, b: string): number {
  let i = 0;
  while (i < a.length && i < b.length) {
    const ca = a.codePointAt(i)!;
    if (ca !== b.codePointAt(i)) break;
    i += ca > 0xffff ? 2 : 1;
  }
  return i;
}

/** A decoder chain run incrementally; its outputs concatenate to runDecoder(steps, all tokens). */
class DecodeStream {
  #pre: DecoderStep[];
  #byteStage: "ByteFallback" | "ByteLevel" | null;
  #post: DecoderStep[];
  /** Whole-text leading strips: [content, chars still allowed to strip]. */
  #strips: [string, number][];
  #tokenIndex = 0;
  #elementIndex = 0;
  /** ByteFallback: the open run of byte values. ByteLevel: bytes of an incomplete UTF-8 tail. */
  #bytes: number[] = [];

  constructor(steps: readonly DecoderStep[]) {
    const byteAt = steps.findIndex((s) => s.type === "ByteFallback" || s.type === "ByteLevel");
    const fuseAt = steps.findIndex((s) => s.type === "Fuse");
    const elementEnd = byteAt >= 0 && steps[byteAt].type === "ByteLevel"
      ? byteAt + 1
      : fuseAt >= 0
      ? fuseAt
      : steps.length;
    this.#byteStage = byteAt >= 0 ? (steps[byteAt].type as "ByteFallback" | "ByteLevel") : null;
    this.#pre = steps.slice(0, byteAt >= 0 ? byteAt : elementEnd);
    this.#post = byteAt >= 0 ? steps.slice(byteAt + 1, elementEnd) : [];
    this.#strips = [];
    for (const s of [...this.#pre, ...this.#post]) {
      if (s.type !== "Replace" && s.type !== "Strip" && s.type !== "Metaspace") {
        throw new Error(`Cannot stream decoder: step "${s.type}" at this position is not supported`);
      }
    }
    for (const s of steps.slice(elementEnd)) {
      if (s.type === "Fuse") continue;
      if (s.type !== "Strip" || s.stop > 0) {
        throw new Error(
          `Cannot stream decoder: after the text is fused only a leading Strip is supported, found ${
            JSON.stringify(s)
          }`,
        );
      }
      this.#strips.push([s.content, s.start]);
    }
  }

  /** Adds a token's string; returns the text it completes. */
  push(token: string): string {
    const index = this.#tokenIndex++;
    const t = this.#pre.reduce((text, step) => applyElementStep(step, text, index), token);
    if (this.#byteStage === "ByteLevel") {
      const bytes = [...this.#bytes, ...byteLevelBytes(t)];
      const cut = incompleteTailStart(bytes);
      this.#bytes = bytes.slice(cut);
      return stripLeading(decodeUtf8Lossy(bytes.slice(0, cut)), this.#strips);
    }
    if (this.#byteStage === "ByteFallback") {
      const b = byteTokenValue(t);
      if (b >= 0) {
        this.#bytes.push(b);
        return "";
      }
      const run = this.#closeRun(true);
      return run + stripLeading(this.#element(t, this.#elementIndex++), this.#strips);
    }
    return stripLeading(this.#element(t, this.#elementIndex++), this.#strips);
  }

  /** What flush() would return now, without changing the state. */
  pending(): string {
    if (this.#byteStage === "ByteLevel") {
      return stripLeading(decodeUtf8Lossy(this.#bytes), copy(this.#strips));
    }
    return this.#byteStage === "ByteFallback" ? this.#closeRun(false) : "";
  }

  flush(): string {
    if (this.#byteStage === "ByteLevel") {
      const text = stripLeading(decodeUtf8Lossy(this.#bytes), this.#strips);
      this.#bytes = [];
      return text;
    }
    return this.#byteStage === "ByteFallback" ? this.#closeRun(true) : "";
  }

  /** Text of the open byte run (or U+FFFD per byte) through the element and whole-text steps. */
  #closeRun(commit: boolean): string {
    if (this.#bytes.length === 0) return "";
    const pieces = decodeByteRun(this.#bytes);
    const text = pieces.map((piece, i) => this.#element(piece, this.#elementIndex + i)).join("");
    if (!commit) return stripLeading(text, copy(this.#strips));
    this.#elementIndex += pieces.length;
    this.#bytes = [];
    return stripLeading(text, this.#strips);
  }

  #element(text: string, index: number): string {
    return this.#post.reduce((t, step) => applyElementStep(step, t, index), text);
  }
}

function copy(strips: [string, number][]): [string, number][] {
  return strips.map(([c, n]) => [c, n]);
}

/** Applies whole-text leading strips to the next chunk of text, spending their budgets. */
function stripLeading(text: string, strips: [string, number][]): string {
  for (const strip of strips) {
    if (strip[1] === 0 || text === "") continue;
    const chars = [...text];
    let cut = 0;
    while (strip[1] > 0 && cut < chars.length) {
      if (chars[cut] !== strip[0]) {
        strip[1] = 0;
        break;
      }
      cut++;
      strip[1]--;
    }
    if (cut > 0) text = chars.slice(cut).join("");
  }
  return text;
}

/** Index where a trailing, still-completable UTF-8 sequence starts (bytes.length when there is none).
 * Follows the WHATWG decoder's byte ranges, so the bytes before it decode the same as in one pass. */
function incompleteTailStart(bytes: number[]): number {
  const n = bytes.length;
  for (let back = 1; back <= 3 && back <= n; back++) {
    const lead = bytes[n - back];
    if (lead >= 0x80 && lead <= 0xbf) continue; // continuation byte: keep looking for the lead
    let need = 0;
    let lo = 0x80;
    let hi = 0xbf;
    if (lead >= 0xc2 && lead <= 0xdf) need = 1;
    else if (lead >= 0xe0 && lead <= 0xef) {
      need = 2;
      if (lead === 0xe0) lo = 0xa0;
      if (lead === 0xed) hi = 0x9f;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      need = 3;
      if (lead === 0xf0) lo = 0x90;
      if (lead === 0xf4) hi = 0x8f;
    } else return n; // ASCII or an invalid lead: nothing to hold
    if (back > need) return n; // the sequence is already complete (or over-long, hence invalid)
    for (let k = 1; k < back; k++) {
      const b = bytes[n - back + k];
      const [l, h] = k === 1 ? [lo, hi] : [0x80, 0xbf];
      if (b < l || b > h) return n;
    }
    return n - back;
  }
  return n;
}
