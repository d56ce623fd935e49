// `deno task ppl --model DIR --tokens FILE.safetensors [--split test] [--ctx 512] [--max-windows N]`:
// perplexity of a checkpoint over a pre-tokenized stream (the fixtures' corpus/tokens-*.safetensors:
// int32 tensors named by split), in non-overlapping windows, as the fixtures' references were made.
import { parseArgs } from "node:util";
import { describeGpu, Engine, openSafetensors, perplexity } from "../engine/mod.ts";

const USAGE = "Usage: deno task ppl --model DIR --tokens FILE.safetensors [--split test] [--ctx 512] " +
  "[--max-windows N] [--json]";

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      model: { type: "string" },
      tokens: { type: "string" },
      split: { type: "string", default: "test" },
      ctx: { type: "string", default: "512" },
      "max-windows": { type: "string" },
      json: { type: "boolean", default: false },
    },
  });
  if (!values.model || !values.tokens) {
    console.error(USAGE);
    return 2;
  }
  const ctx = Number(values.ctx);
  if (!Number.isInteger(ctx) || ctx < 2) {
    throw new Error(`Invalid --ctx "${values.ctx}": expected an integer >= 2`);
  }
  const st = await openSafetensors(values.tokens);
  const info = st.tensors.get(values.split);
  if (!info || info.dtype !== "I32") {
    throw new Error(
      `"${values.tokens}" has no int32 tensor "${values.split}" (found: ${
        [...st.tensors.keys()].join(", ")
      })`,
    );
  }
  const bytes = await st.read(values.split);
  st.close();
  const stream = new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  const engine = await Engine.load({
    modelDir: values.model,
    maxSeqs: 1,
    maxContext: ctx,
    maxBatchTokens: ctx,
    progress: !values.json,
  });
  const maxWindows = values["max-windows"] ? Number(values["max-windows"]) : undefined;
  const r = await perplexity(engine, stream, {
    ctx,
    maxWindows,
    onWindow: (i, n) => !values.json && i % 10 === 0 && console.error(`window ${i + 1}/${n}`),
  });
  const out = { model: values.model, split: values.split, ctx, ...r, gpu: describeGpu(engine.gpu) };
  console.log(
    values.json ? JSON.stringify(out) : `perplexity ${r.ppl.toFixed(4)} over ${r.windows} windows ` +
      `of ${ctx} tokens (${r.seconds.toFixed(1)} s, ${out.gpu})`,
  );
  engine.destroy();
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
    Deno.exit(1);
  }
}
