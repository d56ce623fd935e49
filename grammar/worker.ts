// A grammar Worker: one xgrammar instance with the model's vocabulary, one compiled grammar, and the
// matchers of the sequences generating under it, each answering on its own MessagePort. One Worker per
// grammar (grammar/pool.ts) keeps a slow compile from stalling other sequences' masks, and a grammar the
// engine rejects with a fatal error takes only its own Worker down.
/// <reference lib="deno.worker" />
import {
  type CompileInput,
  type FromGrammarWorker,
  JSON_SEPARATORS,
  type MatcherReply,
  type MatcherRequest,
  type ToGrammarWorker,
  TOOL_CALL_SEPARATOR,
  toolCallPrefix,
} from "./_protocol.ts";
import { loadXgrammar, type XgCompiledGrammar, type XgCompiler, type Xgrammar } from "./_xgrammar.ts";

// xgrammar prints its fatal errors and warnings through console (bound when its module starts, so this
// must come first); the last lines become the message of a failed compile.
const printed: string[] = [];
function capture(...args: unknown[]): void {
  printed.push(args.map(String).join(" "));
  if (printed.length > 50) printed.shift();
}
console.error = capture;
console.warn = capture;
console.log = capture;

let xg: Xgrammar | null = null;
let compiler: XgCompiler | null = null;
let grammar: XgCompiledGrammar | null = null;
const matchers = new Map<number, { dispose(): void }>();
/** Matchers released before they were made (a sequence that ended at once). */
const released = new Set<number>();

function post(m: FromGrammarWorker): void {
  self.postMessage(m);
}

/** xgrammar's own words for a failure: its [FATAL] line without the source path, else the error. */
function failure(e: unknown): string {
  const fatal = printed.findLast((l) => l.includes("[FATAL]"));
  if (fatal) {
    return fatal.replace(/^\[FATAL\]\s*\S+:\d+:\s*/, "").replace(/^Check failed: \(.*?\) is false: /, "");
  }
  return e instanceof Error ? e.message : String(e);
}

async function compile(input: CompileInput): Promise<XgCompiledGrammar> {
  if (input.kind === "json") {
    // indent -1: one line; anyWhitespace false: exactly the separators.
    return await compiler!.compileJSONSchema(input.schema, false, -1, JSON_SEPARATORS, input.strict);
  }
  const tags = [];
  for (const f of input.functions) {
    const ebnf = await xg!.Testings._jsonSchemaToEBNF(f.parameters, false, -1, JSON_SEPARATORS, true);
    tags.push({
      type: "tag",
      begin: toolCallPrefix(f.name),
      content: { type: "grammar", grammar: ebnf },
      end: "}",
    });
  }
  return await compiler!.compileStructuralTag({
    type: "structural_tag",
    format: {
      type: "tags_with_separator",
      tags,
      separator: TOOL_CALL_SEPARATOR,
      at_least_one: true,
      stop_after_first: !input.parallel,
    },
  });
}

async function startMatcher(id: number, port: MessagePort, stopTokenIds: number[]): Promise<void> {
  const m = await xg!.GrammarMatcher.createGrammarMatcher(grammar!, stopTokenIds);
  let closed = false;
  // Requests are answered in order, one at a time.
  let queue = Promise.resolve();
  port.onmessage = (e: MessageEvent<MatcherRequest>) => {
    queue = queue.then(async () => {
      if (closed) return;
      let reply: MatcherReply;
      try {
        const bad = e.data.accept.find((t) => !m.acceptToken(t));
        if (bad !== undefined) reply = { error: `Token ${bad} does not continue the grammar` };
        else reply = { mask: new Uint32Array((await m.getNextTokenBitmask()).buffer) };
      } catch (err) {
        reply = { error: `Grammar matcher failed: ${failure(err)}` };
      }
      if ("mask" in reply) port.postMessage(reply, [reply.mask.buffer]);
      else port.postMessage(reply);
    });
  };
  const handle = {
    dispose() {
      closed = true;
      port.close();
      m.dispose();
    },
  };
  if (released.delete(id)) handle.dispose();
  else matchers.set(id, handle);
}

self.onmessage = async (e: MessageEvent<ToGrammarWorker>) => {
  const msg = e.data;
  try {
    switch (msg.type) {
      case "init": {
        xg = await loadXgrammar();
        const n = msg.vocabSize;
        const tokens = Array.from({ length: n }, (_, i) => msg.vocabulary.tokens[i] ?? "");
        const info = await xg.TokenizerInfo.createTokenizerInfo(
          tokens,
          msg.vocabulary.encoding,
          false,
          n,
          [],
        );
        compiler = await xg.GrammarCompiler.createGrammarCompiler(info, false);
        post({ type: "ready" });
        break;
      }
      case "compile": {
        printed.length = 0;
        const t0 = performance.now();
        grammar = await compile(msg.input);
        post({ type: "compiled", ms: performance.now() - t0 });
        break;
      }
      case "matcher":
        try {
          await startMatcher(msg.id, msg.port, msg.stopTokenIds);
        } catch (err) {
          // The sequence learns it on its port, where the engine waits for its first mask.
          msg.port.postMessage(
            { error: `Cannot start a grammar matcher: ${failure(err)}` } satisfies MatcherReply,
          );
        }
        break;
      case "release": {
        const m = matchers.get(msg.id);
        if (m) m.dispose();
        else released.add(msg.id);
        matchers.delete(msg.id);
        break;
      }
    }
  } catch (err) {
    post({ type: "failed", message: failure(err) });
  }
};
