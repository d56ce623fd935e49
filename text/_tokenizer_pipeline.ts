// The text stages of a tokenizer.json around its BPE model: normalizer and pre-tokenizer (text -> words)
// and decoder (tokens -> text), read from their JSON blocks. Semantics follow HF tokenizers
// (tokenizers/src/{normalizers,pre_tokenizers,decoders}); unsupported block types throw, naming the type.

type Json = Record<string, unknown>;

/** A span of text on its way to the BPE model; `atStart` marks the span that begins the input. */
export interface Piece {
  text: string;
  atStart: boolean;
}

export type Normalizer = (piece: Piece) => Piece;
export type PreTokenizer = (pieces: Piece[]) => Piece[];

/** One decoder step; a tokenizer.json decoder is flattened into a list of these. */
export type DecoderStep =
  | { type: "Replace"; pattern: string | RegExp; content: string }
  | { type: "ByteFallback" }
  | { type: "ByteLevel" }
  | { type: "Fuse" }
  | { type: "Strip"; content: string; start: number; stop: number }
  | { type: "Metaspace"; replacement: string; dropFirst: boolean };

// ---- byte-level alphabet (GPT-2's bytes_to_unicode) ----

/** Byte -> the printable char that stands for it: bytes that are printable Latin-1 map to themselves,
 * the other 68 to U+0100.. in byte order. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const chars: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    chars[b] = String.fromCharCode(printable ? b : 256 + extra++);
  }
  return chars;
})();

export const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

const utf8Encoder = new TextEncoder();
const lossyDecoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
const strictDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** UTF-8 -> string, invalid sequences -> U+FFFD (maximal subparts, like Rust's from_utf8_lossy). */
export function decodeUtf8Lossy(bytes: Uint8Array | number[]): string {
  return lossyDecoder.decode(bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes));
}

/** A run of `<0xXX>` tokens as HF's ByteFallback decoder reads it: the text if the whole run is valid
 * UTF-8, else one U+FFFD per byte. */
export function decodeByteRun(bytes: number[]): string[] {
  try {
    return [strictDecoder.decode(Uint8Array.from(bytes))];
  } catch {
    return bytes.map(() => "\uFFFD");
  }
}

/** The byte a `<0xXX>` token stands for, else -1. */
export function byteTokenValue(token: string): number {
  if (token.length !== 6 || !token.startsWith("<0x") || token[5] !== ">") return -1;
  const hex = token.slice(3, 5);
  return /^[0-9A-Fa-f]{2}$/.test(hex) ? parseInt(hex, 16) : -1;
}

/** The bytes a byte-level token stands for; a token with chars outside the alphabet stands for its own
 * UTF-8 (as HF's ByteLevel decoder does for added tokens). */
export function byteLevelBytes(token: string): number[] {
  const bytes: number[] = [];
  for (const ch of token) {
    const b = CHAR_TO_BYTE.get(ch);
    if (b === undefined) return Array.from(utf8Encoder.encode(token));
    bytes.push(b);
  }
  return bytes;
}

// ---- regex patterns (Oniguruma syntax in tokenizer.json) -> JS RegExp ----

/** Oniguruma's Unicode `\s` (White_Space). JS `\s` differs: it adds U+FEFF and lacks U+0085. */
const WHITE_SPACE = "\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

/** Extra chars Unicode simple case folding puts in a letter's case-insensitive class. */
const FOLD_EXTRAS: Record<string, string> = { k: "\\u212a", s: "\\u017f" };

/** Rewrites a tokenizer.json regex for JS: `(?i:...)` groups of literal text become explicit case
 * classes, `\s`/`\S` become Oniguruma's whitespace set. Other syntax is passed through. */
export function toJsRegex(pattern: string, flags = "gu"): RegExp {
  let out = "";
  let inClass = false;
  let i = 0;
  while (i < pattern.length) {
    const c = pattern[i];
    if (c === "\\") {
      const e = pattern[i + 1];
      if (e === "s") out += inClass ? WHITE_SPACE : `[${WHITE_SPACE}]`;
      else if (e === "S") {
        if (inClass) {
          throw new Error(`Cannot translate regex "${pattern}": \\S inside a class is unsupported`);
        }
        out += `[^${WHITE_SPACE}]`;
      } else out += c + e;
      i += 2;
    } else if (inClass) {
      if (c === "]") inClass = false;
      out += c;
      i++;
    } else if (c === "[") {
      inClass = true;
      out += c;
      if (pattern[i + 1] === "^") {
        out += "^";
        i++;
      }
      if (pattern[i + 1] === "]") {
        out += "\\]";
        i++;
      }
      i++;
    } else if (pattern.startsWith("(?i:", i)) {
      const end = pattern.indexOf(")", i);
      const body = pattern.slice(i + 4, end);
      if (end < 0 || /[()[\]\\]/.test(body)) {
        throw new Error(
          `Cannot translate regex "${pattern}": expected (?i:...) to hold only literals and |, found "${body}"`,
        );
      }
      out += "(?:" + body.replace(/[A-Za-z]/g, caseClass) + ")";
      i = end + 1;
    } else if (pattern.startsWith("(?i)", i) || pattern.startsWith("(?-i", i)) {
      throw new Error(
        `Cannot translate regex "${pattern}": inline flag groups other than (?i:...) are unsupported`,
      );
    } else {
      out += c;
      i++;
    }
  }
  return new RegExp(out, flags);
}

function caseClass(letter: string): string {
  const lower = letter.toLowerCase();
  return `[${lower}${letter.toUpperCase()}${FOLD_EXTRAS[lower] ?? ""}]`;
}

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&");
}

function patternOf(json: unknown, where: string): RegExp {
  const p = json as { String?: string; Regex?: string } | undefined;
  if (typeof p?.String === "string") return new RegExp(escapeRegex(p.String), "gu");
  if (typeof p?.Regex === "string") return toJsRegex(p.Regex);
  throw new Error(
    `Cannot read ${where} pattern: expected {String} or {Regex}, found ${JSON.stringify(json)}`,
  );
}

// ---- normalizers ----

export interface NormalizerOptions {
  /** tokenizer_config.json `legacy: false`: a Prepend normalizer applies only to the span that begins
   * the input, not to text after an added token (transformers' non-legacy Llama behaviour). */
  prependFirstOnly: boolean;
}

export function parseNormalizer(json: unknown, options: NormalizerOptions): Normalizer | null {
  if (json === null || json === undefined) return null;
  const n = json as Json;
  switch (n.type) {
    case "Sequence": {
      const steps = (n.normalizers as unknown[]).map((s) => parseNormalizer(s, options)).filter((s) =>
        s !== null
      );
      return (piece) => steps.reduce((p, step) => step(p), piece);
    }
    case "Prepend": {
      const prefix = String(n.prepend);
      return (p) =>
        p.text.length > 0 && (p.atStart || !options.prependFirstOnly) ? { ...p, text: prefix + p.text } : p;
    }
    case "Replace": {
      const re = patternOf(n.pattern, "Replace normalizer");
      const content = String(n.content);
      return (p) => ({ ...p, text: p.text.replace(re, () => content) });
    }
    case "NFC":
    case "NFD":
    case "NFKC":
    case "NFKD": {
      const form = n.type;
      return (p) => ({ ...p, text: p.text.normalize(form) });
    }
    case "Lowercase":
      return (p) => ({ ...p, text: p.text.toLowerCase() });
    case "Strip": {
      const left = n.strip_left !== false;
      const right = n.strip_right !== false;
      return (p) => {
        let t = p.text;
        if (left) t = t.trimStart();
        if (right) t = t.trimEnd();
        return { ...p, text: t };
      };
    }
    default:
      throw new Error(`Cannot load normalizer: type "${n.type}" is not supported`);
  }
}

// ---- pre-tokenizers ----

/** GPT-2's split pattern, used by a ByteLevel pre-tokenizer with use_regex. */
const GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

type SplitBehavior = "Isolated" | "Removed" | "MergedWithPrevious" | "MergedWithNext";

/** Splits each piece at the matches of `re` (a global RegExp), as HF's `split` with a behaviour. */
function splitPieces(pieces: Piece[], re: RegExp, behavior: SplitBehavior): Piece[] {
  const out: Piece[] = [];
  for (const piece of pieces) {
    // [start, end) spans of the output parts, in order.
    const spans: [number, number][] = [];
    let last = 0;
    let glueNext = -1; // MergedWithNext: start of a match waiting for the gap after it
    for (const m of piece.text.matchAll(re)) {
      const start = m.index!;
      const end = start + m[0].length;
      if (end === start) continue;
      const gapStart = glueNext >= 0 ? glueNext : last;
      glueNext = -1;
      if (behavior === "Isolated") spans.push([gapStart, start], [start, end]);
      else if (behavior === "Removed") spans.push([gapStart, start]);
      else if (behavior === "MergedWithPrevious") spans.push([gapStart, end]);
      else {
        spans.push([gapStart, start]);
        glueNext = start;
      }
      last = end;
    }
    spans.push([glueNext >= 0 ? glueNext : last, piece.text.length]);
    for (const [start, end] of spans) {
      if (end > start) {
        out.push({ text: piece.text.slice(start, end), atStart: piece.atStart && start === 0 });
      }
    }
  }
  return out;
}

export function parsePreTokenizer(json: unknown): PreTokenizer | null {
  if (json === null || json === undefined) return null;
  const p = json as Json;
  switch (p.type) {
    case "Sequence": {
      const steps = (p.pretokenizers as unknown[]).map(parsePreTokenizer).filter((s) => s !== null);
      return (pieces) => steps.reduce((acc, step) => step(acc), pieces);
    }
    case "Split": {
      if (p.invert === true) throw new Error("Cannot load Split pre-tokenizer: invert is not supported");
      const behavior = p.behavior as string;
      if (!["Isolated", "Removed", "MergedWithPrevious", "MergedWithNext"].includes(behavior)) {
        throw new Error(`Cannot load Split pre-tokenizer: behavior "${behavior}" is not supported`);
      }
      const re = patternOf(p.pattern, "Split pre-tokenizer");
      return (pieces) => splitPieces(pieces, re, behavior as SplitBehavior);
    }
    case "ByteLevel": {
      const addPrefixSpace = p.add_prefix_space === true;
      const re = p.use_regex === false ? null : toJsRegex(GPT2_PATTERN);
      return (pieces) => {
        let ps = addPrefixSpace
          ? pieces.map((q) => (q.text.startsWith(" ") ? q : { ...q, text: " " + q.text }))
          : pieces;
        if (re !== null) ps = splitPieces(ps, re, "Isolated");
        return ps.map((q) => ({ ...q, text: toByteLevel(q.text) }));
      };
    }
    case "Metaspace": {
      const replacement = String(p.replacement ?? "\u2581");
      const scheme = metaspaceScheme(p);
      const split = p.split !== false;
      const sep = new RegExp(escapeRegex(replacement), "gu");
      return (pieces) => {
        const ps = pieces.map((q) => {
          let text = q.text.replaceAll(" ", replacement);
          const prepend = scheme === "always" || (scheme === "first" && q.atStart);
          if (prepend && !text.startsWith(replacement)) text = replacement + text;
          return { ...q, text };
        });
        return split ? splitPieces(ps, sep, "MergedWithNext") : ps;
      };
    }
    default:
      throw new Error(`Cannot load pre-tokenizer: type "${p.type}" is not supported`);
  }
}

function metaspaceScheme(p: Json): "always" | "first" | "never" {
  if (typeof p.prepend_scheme === "string") return p.prepend_scheme as "always" | "first" | "never";
  return p.add_prefix_space === false ? "never" : "always";
}

/** UTF-8 bytes of `text`, each written as its byte-level char. */
export function toByteLevel(text: string): string {
  let out = "";
  for (const b of utf8Encoder.encode(text)) out += BYTE_TO_CHAR[b];
  return out;
}

// ---- decoders ----

export function parseDecoder(json: unknown): DecoderStep[] {
  if (json === null || json === undefined) return [];
  const d = json as Json;
  switch (d.type) {
    case "Sequence":
      return (d.decoders as unknown[]).flatMap(parseDecoder);
    case "Replace": {
      const pat = d.pattern as { String?: string };
      const pattern = typeof pat?.String === "string" ? pat.String : patternOf(d.pattern, "Replace decoder");
      return [{ type: "Replace", pattern, content: String(d.content) }];
    }
    case "ByteFallback":
    case "ByteLevel":
    case "Fuse":
      return [{ type: d.type }];
    case "Strip":
      return [{ type: "Strip", content: String(d.content), start: Number(d.start), stop: Number(d.stop) }];
    case "Metaspace":
      return [{
        type: "Metaspace",
        replacement: String(d.replacement ?? "\u2581"),
        dropFirst: metaspaceScheme(d) !== "never",
      }];
    default:
      throw new Error(`Cannot load decoder: type "${d.type}" is not supported`);
  }
}

/** One element-wise decoder step (Replace, Strip, Metaspace) on the element at `index`. */
export function applyElementStep(step: DecoderStep, text: string, index: number): string {
  switch (step.type) {
    case "Replace":
      return typeof step.pattern === "string"
        ? text.replaceAll(step.pattern, step.content)
        : text.replace(step.pattern, () => step.content);
    case "Strip": {
      const chars = [...text];
      let from = 0;
      while (from < step.start && from < chars.length && chars[from] === step.content) from++;
      let to = chars.length;
      while (chars.length - to < step.stop && to > from && chars[to - 1] === step.content) to--;
      return chars.slice(from, to).join("");
    }
    case "Metaspace": {
      const drop = index === 0 && step.dropFirst;
      return text.replaceAll(step.replacement, drop ? "" : " ");
    }
    default:
      throw new Error(`Cannot apply decoder step "${step.type}" to one element`);
  }
}

/** Tokens -> text through the whole decoder chain, as HF's `decode_chain` then a final join. */
export function runDecoder(steps: DecoderStep[], tokens: string[]): string {
  let items = tokens;
  for (const step of steps) {
    switch (step.type) {
      case "ByteFallback": {
        const out: string[] = [];
        let run: number[] = [];
        for (const t of items) {
          const b = byteTokenValue(t);
          if (b >= 0) {
            run.push(b);
            continue;
          }
          if (run.length > 0) out.push(...decodeByteRun(run));
          run = [];
          out.push(t);
        }
        if (run.length > 0) out.push(...decodeByteRun(run));
        items = out;
        break;
      }
      case "ByteLevel":
        items = [decodeUtf8Lossy(items.flatMap(byteLevelBytes))];
        break;
      case "Fuse":
        items = [items.join("")];
        break;
      default:
        items = items.map((t, i) => applyElementStep(step, t, i));
    }
  }
  return items.join("");
}
