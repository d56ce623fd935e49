// GrammarPool, on the serving thread: checks a request's schemas (schema.ts), compiles each distinct
// grammar once in a Worker of its own (worker.ts), and hands out per-sequence matchers as MessagePorts the
// engine talks to directly. Compiles never run on the serving thread or beside another grammar's matchers,
// so a schema that takes seconds to compile delays only the requests that use it. A warm spare Worker
// (xgrammar loaded, vocabulary indexed) waits for the next new grammar; the least recently used idle
// grammars are dropped past `maxGrammars`.

import { checkSchema, SchemaError } from "./schema.ts";
import type { CompileInput, FromGrammarWorker, ToGrammarWorker } from "./_protocol.ts";
import type { Vocabulary } from "./vocabulary.ts";

/** A grammar Trellis cannot enforce (a 400): `param` names the request field, `pointer` the schema node. */
export class GrammarError extends Error {
  readonly param: string;
  readonly pointer: string | null;

  constructor(message: string, param: string, pointer: string | null = null) {
    super(message);
    this.name = "GrammarError";
    this.param = param;
    this.pointer = pointer;
  }
}

/** A JSON schema from a request, with the field it came from (for error messages). */
export interface SchemaSource {
  schema: unknown;
  param: string;
}

/** What a sequence's output must match. */
export type GrammarSpec =
  /** Any JSON object (response_format json_object). */
  | { type: "json_object" }
  /** A JSON value valid against the schema (response_format json_schema). */
  | { type: "json_schema"; schema: SchemaSource }
  /** One or more tool calls `{"name": ..., "parameters": ...}` ("; " between them when parallel). */
  | {
    type: "tool_calls";
    functions: { name: string; parameters: SchemaSource | null }[];
    parallel: boolean;
  };

export interface GrammarPoolOptions {
  vocabulary: Vocabulary;
  /** Rows of the model's logits (may exceed the tokenizer's vocabulary). */
  vocabSize: number;
  /** Compiled grammars kept while idle, one Worker each (default 8). */
  maxGrammars?: number;
  /** A compile that runs longer fails with a GrammarError (default 30 s). */
  compileTimeoutMs?: number;
  /** A grammar handed out this recently is kept even past maxGrammars: its request is about to make
   * matchers (default 10 s). */
  graceMs?: number;
}

/** One sequence's matcher: `port` goes to the engine with the request; `release()` when it is done. */
export interface MatcherHandle {
  port: MessagePort;
  release(): void;
}

/** The parameters of a function that declares none: no arguments. */
const NO_PARAMETERS = { type: "object", properties: {} };

class GrammarWorker {
  readonly #worker: Worker;
  #waiting: ((m: FromGrammarWorker) => void)[] = [];

  constructor() {
    this.#worker = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
    this.#worker.onmessage = (e: MessageEvent<FromGrammarWorker>) => this.#waiting.shift()?.(e.data);
    this.#worker.onerror = (e) => {
      e.preventDefault();
      for (const w of this.#waiting.splice(0)) w({ type: "failed", message: e.message });
    };
  }

  /** Sends a message that gets one reply. */
  request(m: ToGrammarWorker): Promise<FromGrammarWorker> {
    return new Promise((resolve) => {
      this.#waiting.push(resolve);
      this.#worker.postMessage(m);
    });
  }

  post(m: ToGrammarWorker, transfer: Transferable[] = []): void {
    this.#worker.postMessage(m, transfer);
  }

  terminate(): void {
    this.#worker.terminate();
    for (const w of this.#waiting.splice(0)) w({ type: "failed", message: "Grammar worker stopped" });
  }
}

interface Entry {
  worker: Promise<GrammarWorker>;
  ready: Promise<Grammar>;
  settled: boolean;
  /** Matchers handed out and not yet released. */
  active: number;
  /** performance.now() when compile() last returned it. */
  usedAt: number;
}

/** A compiled grammar: make one matcher per sequence that generates under it. */
export class Grammar {
  readonly compileMs: number;
  readonly #pool: GrammarPool;
  readonly #entry: Entry;
  static #nextId = 0;

  readonly #worker: GrammarWorker;

  constructor(o: { pool: GrammarPool; entry: Entry; worker: GrammarWorker; compileMs: number }) {
    this.#pool = o.pool;
    this.#entry = o.entry;
    this.#worker = o.worker;
    this.compileMs = o.compileMs;
  }

  /** A matcher at the grammar's start; it allows `stopTokenIds` once the grammar is complete. */
  matcher(stopTokenIds: readonly number[]): MatcherHandle {
    const id = Grammar.#nextId++;
    const { port1, port2 } = new MessageChannel();
    this.#entry.active++;
    this.#worker.post({ type: "matcher", id, port: port1, stopTokenIds: [...stopTokenIds] }, [port1]);
    let released = false;
    return {
      port: port2,
      release: () => {
        if (released) return;
        released = true;
        this.#worker.post({ type: "release", id });
        this.#entry.active--;
        this.#pool.evict();
      },
    };
  }
}

/** The schema as JSON text after the subset check; SchemaError becomes a GrammarError for its field. */
function checked(source: SchemaSource): string {
  try {
    checkSchema(source.schema);
  } catch (e) {
    if (!(e instanceof SchemaError)) throw e;
    const at = e.pointer === "" ? "" : ` at "${e.pointer}"`;
    throw new GrammarError(
      `Unsupported JSON schema in "${source.param}"${at}: ${e.message}`,
      source.param,
      e.pointer,
    );
  }
  return JSON.stringify(source.schema);
}

function compileInput(spec: GrammarSpec): { input: CompileInput; param: string } {
  switch (spec.type) {
    case "json_object":
      return {
        input: { kind: "json", schema: '{"type": "object"}', strict: false },
        param: "response_format",
      };
    case "json_schema":
      return {
        input: { kind: "json", schema: checked(spec.schema), strict: true },
        param: spec.schema.param,
      };
    case "tool_calls":
      return {
        input: {
          kind: "tool_calls",
          functions: spec.functions.map((f) => ({
            name: f.name,
            parameters: f.parameters ? checked(f.parameters) : JSON.stringify(NO_PARAMETERS),
          })),
          parallel: spec.parallel,
        },
        param: "tools",
      };
  }
}

export class GrammarPool {
  readonly #o: Required<GrammarPoolOptions>;
  /** Compiled (or compiling) grammars by their input, least recently used first. */
  readonly #entries = new Map<string, Entry>();
  #spare: Promise<GrammarWorker> | null = null;
  #closed = false;
  /** Compiles finished (successful or not), for metrics and tests. */
  compiles = 0;

  constructor(o: GrammarPoolOptions) {
    this.#o = { maxGrammars: 8, compileTimeoutMs: 30_000, graceMs: 10_000, ...o };
  }

  /** Starts the spare Worker now, so the first request with a new grammar does not wait for it. */
  prewarm(): Promise<void> {
    const spare = this.#spare ??= this.#start();
    // A warm-up that fails must not take the server down (an unhandled rejection ends the process): the
    // caller learns why, and the next structured request starts a Worker again and gets the error itself.
    return spare.then(
      () => {},
      (e) => {
        if (this.#spare === spare) this.#spare = null;
        throw e;
      },
    );
  }

  /** Workers alive: one per kept grammar, plus the spare. */
  get workers(): number {
    return this.#entries.size + (this.#spare ? 1 : 0);
  }

  /**
   * The compiled grammar of `spec`, from the cache or compiled now in a Worker of its own. Throws
   * GrammarError (a 400) for a schema outside the supported subset, one xgrammar refuses, or one whose
   * compile outruns the timeout.
   */
  async compile(spec: GrammarSpec): Promise<Grammar> {
    if (this.#closed) throw new Error("Grammar pool is closed");
    const { input, param } = compileInput(spec);
    const key = JSON.stringify(input);
    const cached = this.#entries.get(key);
    if (cached) {
      this.#entries.delete(key);
      this.#entries.set(key, cached);
      const grammar = await cached.ready;
      cached.usedAt = performance.now();
      return grammar;
    }
    const entry: Entry = { worker: this.#take(), ready: null!, settled: false, active: 0, usedAt: 0 };
    entry.ready = (async () => {
      const worker = await entry.worker;
      try {
        const compileMs = await this.#compileOn(worker, input, param);
        return new Grammar({ pool: this, entry, worker, compileMs });
      } catch (e) {
        this.#entries.delete(key);
        worker.terminate();
        throw e;
      } finally {
        entry.settled = true;
        this.compiles++;
      }
    })();
    this.#entries.set(key, entry);
    const grammar = await entry.ready;
    entry.usedAt = performance.now();
    this.evict();
    return grammar;
  }

  /** Drops the least recently used idle grammars beyond maxGrammars. */
  evict(): void {
    const now = performance.now();
    const newest = [...this.#entries.keys()].at(-1);
    for (const [key, e] of this.#entries) {
      if (this.#entries.size <= this.#o.maxGrammars) return;
      if (key === newest || !e.settled || e.active > 0 || now - e.usedAt < this.#o.graceMs) continue;
      this.#entries.delete(key);
      e.worker.then((w) => w.terminate());
    }
  }

  /** Stops every Worker; matchers still in use answer nothing more. */
  async close(): Promise<void> {
    this.#closed = true;
    const spare = this.#spare;
    this.#spare = null;
    const workers = [...[...this.#entries.values()].map((e) => e.worker), ...(spare ? [spare] : [])];
    this.#entries.clear();
    for (const w of workers) (await w.catch(() => null))?.terminate();
  }

  #start(): Promise<GrammarWorker> {
    const w = new GrammarWorker();
    return w.request({ type: "init", vocabulary: this.#o.vocabulary, vocabSize: this.#o.vocabSize }).then(
      (m) => {
        if (m.type === "ready") return w;
        w.terminate();
        throw new Error(`Cannot start the grammar engine: ${m.type === "failed" ? m.message : m.type}`);
      },
    );
  }

  /** The spare Worker for a new grammar; a new spare starts at once. */
  #take(): Promise<GrammarWorker> {
    const w = this.#spare ?? this.#start();
    const spare = this.#start();
    this.#spare = spare;
    // A spare that fails to start is replaced by the next compile instead of failing it too.
    spare.catch(() => {
      if (this.#spare === spare) this.#spare = null;
    });
    return w;
  }

  async #compileOn(w: GrammarWorker, input: CompileInput, param: string): Promise<number> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), this.#o.compileTimeoutMs);
    });
    try {
      const reply = await Promise.race([w.request({ type: "compile", input }), timeout]);
      if (reply === "timeout") {
        throw new GrammarError(
          `Compiling the grammar for "${param}" took longer than ${this.#o.compileTimeoutMs / 1000} s: ` +
            "simplify the schema (long maxLength, minLength or repetition counts are the usual cause)",
          param,
        );
      }
      if (reply.type === "compiled") return reply.ms;
      const what = input.kind === "json" ? "schema" : "tool schemas";
      const detail = reply.type === "failed" ? reply.message : reply.type;
      throw new GrammarError(`The grammar engine refused the ${what} in "${param}": ${detail}`, param);
    } finally {
      clearTimeout(timer);
    }
  }
}
