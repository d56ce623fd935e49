// `deno task serve [MODEL] [--tokenizer DIR] [--port N] ...`: loads a checkpoint into the engine Worker and
// serves the OpenAI-compatible API. Without MODEL (or --model) it serves the small model embedded in the
// repository. Every flag has a TRELLIS_* environment variable, and vLLM's serve flags work (see --help).
import { configHelp, parseConfig } from "./server/config.ts";
import { handleSignals, startServer } from "./server/app.ts";
import { TokenizerCodec } from "./text/mod.ts";
import { checkpointConfig, DEFAULT_MODEL_DIR, EngineClient } from "./engine/mod.ts";

async function main(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(`Usage: deno task serve [MODEL] [options]\n\n${configHelp()}`);
    return 0;
  }
  const config = parseConfig(args);
  const modelDir = config.modelDir ?? DEFAULT_MODEL_DIR;
  // The tokenizer loads first: a wrong directory fails in a second, before any weight is read. A QTIP
  // checkpoint names the model whose tokenizer it uses in config.json's _name_or_path.
  const { nameOrPath } = await checkpointConfig(modelDir);
  const codec = await TokenizerCodec.forModel({
    modelDir,
    tokenizerDir: config.tokenizerDir ?? undefined,
    nameOrPath,
  });
  const engine = new EngineClient({
    modelDir,
    maxSeqs: config.maxRunning,
    maxContext: config.maxContext ?? undefined,
    kvTokens: config.kvCacheTokens ?? undefined,
    maxBatchTokens: config.maxBatchTokens ?? undefined,
    progress: true,
  });
  const handle = startServer({ ...config, modelDir }, { engine, codec });
  handleSignals(handle);
  try {
    await engine.ready();
  } catch (e) {
    console.error(`error: cannot load the model from "${modelDir}": ${e instanceof Error ? e.message : e}`);
    await handle.shutdown(0).catch(() => {});
    return 1;
  }
  // The grammar engine loads beside the model, so the first structured request does not wait for it. If it
  // cannot start, the server still serves everything else; structured requests report the failure.
  handle.server.grammars().prewarm().catch((e) =>
    console.error(
      `warning: the grammar engine did not start (structured outputs and tool calls will fail): ${
        e instanceof Error ? e.message : e
      }`,
    )
  );
  console.error(
    `Trellis ready: ${engine.info.source} (${engine.info.quantization}, context ${engine.info.maxContext}) at ${handle.url}`,
  );
  await handle.finished;
  return 0;
}

if (import.meta.main) {
  try {
    const code = await main(Deno.args);
    if (code !== 0) Deno.exit(code);
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
    Deno.exit(1);
  }
}
