// `deno task generate`: loads a checkpoint, runs one prompt through the engine and prints the
// completion as it is generated (or one JSON object with --json).
import { parseArgs } from "node:util";
import { checkpointConfig, DEFAULT_MODEL_DIR, Engine, Runner, type TokenEvent } from "../engine/mod.ts";
import { chatFamily, IncrementalDetokenizer, loadTokenizer, renderChat } from "../text/mod.ts";

const USAGE = `Usage: deno task generate [--model DIR] [--tokenizer DIR] [--prompt TEXT | --prompt-ids 1,2,3]
       [--chat] [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--min-p P] [--seed S]
       [--ignore-eos] [--max-context N] [--json]

Without --model, the small model embedded in the repository (models/llama2-qtip-2bit) is used.`;

class UsageError extends Error {}

function num(
  name: string,
  v: string | undefined,
  def: number,
  check: (n: number) => boolean,
  what: string,
): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n) || !check(n)) throw new UsageError(`Invalid --${name} "${v}": expected ${what}`);
  return n;
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: "string" },
      tokenizer: { type: "string" },
      prompt: { type: "string" },
      "prompt-ids": { type: "string" },
      chat: { type: "boolean", default: false },
      "max-tokens": { type: "string" },
      temperature: { type: "string" },
      "top-p": { type: "string" },
      "top-k": { type: "string" },
      "min-p": { type: "string" },
      seed: { type: "string" },
      "ignore-eos": { type: "boolean", default: false },
      "max-context": { type: "string" },
      json: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const maxTokens = num(
    "max-tokens",
    values["max-tokens"],
    64,
    (n) => Number.isInteger(n) && n >= 1,
    "an integer >= 1",
  );
  const temperature = num(
    "temperature",
    values.temperature,
    0,
    (n) => n >= 0 && n <= 2,
    "a number in [0, 2]",
  );
  const topP = num("top-p", values["top-p"], 1, (n) => n > 0 && n <= 1, "a number in (0, 1]");
  const topK = num("top-k", values["top-k"], 0, (n) => Number.isInteger(n) && n >= 0, "an integer >= 0");
  const minP = num("min-p", values["min-p"], 0, (n) => n >= 0 && n <= 1, "a number in [0, 1]");
  const seed = num(
    "seed",
    values.seed,
    0,
    (n) => Number.isInteger(n) && n >= 0 && n < 2 ** 32,
    "an integer in [0, 2^32)",
  );
  const maxContext = values["max-context"]
    ? num("max-context", values["max-context"], 0, (n) => Number.isInteger(n) && n >= 2, "an integer >= 2")
    : undefined;
  if (values.prompt !== undefined && values["prompt-ids"] !== undefined) {
    throw new UsageError("Give either --prompt or --prompt-ids, not both");
  }

  const modelDir = values.model ?? DEFAULT_MODEL_DIR;
  const t0 = performance.now();
  const { nameOrPath } = await checkpointConfig(modelDir);
  const tok = await loadTokenizer({ modelDir, tokenizerDir: values.tokenizer, nameOrPath });

  let promptIds: number[];
  if (values["prompt-ids"] !== undefined) {
    promptIds = values["prompt-ids"].split(",").map((s) => s.trim()).filter((s) => s).map((s) => {
      const n = Number(s);
      if (!Number.isInteger(n) || n < 0) {
        throw new UsageError(`Invalid --prompt-ids entry "${s}": expected a token id`);
      }
      return n;
    });
  } else {
    const text = values.prompt ?? "In the beginning";
    if (values.chat) {
      const rendered = renderChat(tok.chatTemplate, chatFamily(tok), [{ role: "user", content: text }], {
        addGenerationPrompt: true,
        bosToken: tok.bosToken ?? "",
        eosToken: tok.eosToken ?? "",
      });
      promptIds = tok.encode(rendered, { addSpecial: false, parseSpecial: true });
    } else {
      promptIds = tok.encode(text, { addSpecial: true });
    }
  }
  for (const id of promptIds) {
    if (id >= tok.vocabSize) {
      throw new UsageError(`Prompt token id ${id} is outside the vocabulary (size ${tok.vocabSize})`);
    }
  }

  const engine = await Engine.load({
    modelDir,
    maxContext,
    maxSeqs: 1,
    progress: !values.json,
    maxBatchTokens: 512,
  });
  const loadMs = performance.now() - t0;
  const stopTokenIds = [...new Set([...tok.eosIds, ...engine.cfg.eosTokenIds])];
  const detok = new IncrementalDetokenizer(tok, promptIds);
  const ids: number[] = [];
  let firstAt = 0;
  let finish: TokenEvent["finishReason"];
  let error: string | undefined;
  const tStart = performance.now();
  const done = new Promise<void>((resolve) => {
    const runner = new Runner(engine, (_id, ev) => {
      if (ev.ids.length && ids.length === 0) firstAt = performance.now();
      for (const id of ev.ids) {
        ids.push(id);
        const piece = detok.push(id);
        if (!values.json && piece) Deno.stdout.writeSync(new TextEncoder().encode(piece));
      }
      if (ev.finishReason) {
        finish = ev.finishReason;
        error = ev.error;
        runner.close();
        resolve();
      }
    });
    runner.run().catch((e) => {
      error = e instanceof Error ? e.message : String(e);
      resolve();
    });
    runner.submit({
      id: "cli",
      promptIds,
      maxTokens: Math.min(maxTokens, engine.maxContext - promptIds.length),
      sampling: { temperature, topP, topK, minP, seed },
      stopTokenIds,
      ignoreEos: values["ignore-eos"],
    });
  });
  await done;
  const tEnd = performance.now();
  const tail = detok.flush();
  if (error) throw new Error(error);
  const prefillMs = firstAt - tStart;
  const decodeS = (tEnd - firstAt) / 1000;
  const timings = {
    load_ms: Math.round(loadMs),
    prefill_ms: Math.round(prefillMs * 10) / 10,
    prefill_tokens_per_s: Math.round(promptIds.length / (prefillMs / 1000)),
    decode_tokens_per_s: ids.length > 1 ? Math.round(((ids.length - 1) / decodeS) * 10) / 10 : null,
  };
  if (values.json) {
    console.log(JSON.stringify({
      prompt_ids: promptIds,
      token_ids: ids,
      text: tok.decode(ids),
      finish_reason: finish,
      timings,
    }));
  } else {
    if (tail) Deno.stdout.writeSync(new TextEncoder().encode(tail));
    console.error(
      `\n[${ids.length} tokens, finish: ${finish}; load ${timings.load_ms} ms, prefill ${timings.prefill_ms} ms, ` +
        `decode ${timings.decode_tokens_per_s ?? "-"} tokens/s]`,
    );
  }
  engine.destroy();
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    console.error(`error: ${msg}`);
    if (e instanceof UsageError || (e instanceof TypeError && msg.includes("argument"))) console.error(USAGE);
    Deno.exit(1);
  }
}
