// End to end: `deno task synth` output is servable. Writes a tiny synthetic checkpoint (weights and tokenizer),
// starts the real server (main.ts) on it as a subprocess on a loopback port, and gets a chat completion whose
// prompt was tokenized with the synthetic tokenizer. Needs a WebGPU adapter (lavapipe will do: a few tokens).
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { synthCheckpoint } from "./synth.ts";
import { TokenizerCodec } from "../text/mod.ts";
import { noGpu } from "../test/support/mod.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const NO_GPU = await noGpu();

/** Calls `onLine` for each line of `stream` until it ends. */
async function eachLine(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> {
  let buf = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    buf += text;
    const lines = buf.split("\n");
    buf = lines.pop()!;
    lines.forEach(onLine);
  }
  if (buf) onLine(buf);
}

Deno.test({
  name: "main.ts serves a tiny synthetic checkpoint with its synthetic tokenizer: a chat completion",
  ignore: NO_GPU,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "synth_serve_" });
    try {
      await synthCheckpoint({ arch: "tiny", code: "HYB", bits: 2, out: dir });
      const args = ["run", "-A", "main.ts", "--model", dir, "--host", "127.0.0.1", "--port", "0"];
      args.push(
        "--max-context",
        "128",
        "--max-running",
        "2",
        "--kv-cache-tokens",
        "256",
        "--no-log-requests",
      );
      const env = { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp", NO_COLOR: "1" };
      const child = new Deno.Command(Deno.execPath(), {
        args,
        cwd: ROOT,
        env,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const log: string[] = [];
      let ready!: (url: string) => void;
      const url = new Promise<string>((resolve) => ready = resolve);
      const onLine = (line: string) => {
        log.push(line);
        const m = line.match(/^Trellis ready: .* at (http:\/\/\S+\/v1)$/);
        if (m) ready(m[1]);
      };
      const readers = Promise.all([eachLine(child.stdout, onLine), eachLine(child.stderr, onLine)]);
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        const base = await Promise.race([
          url,
          child.status.then((s) => Promise.reject(new Error(`the server exited (${s.code})`))),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error("the server was not ready within 180 s")), 180_000);
          }),
        ]).catch((e) => {
          throw new Error(`${e.message}:\n${log.join("\n")}`);
        });
        const models = await (await fetch(`${base}/models`)).json();
        const model = models.data[0].id as string;

        const messages = [{ role: "user" as const, content: "Who was the father of Enos? \u{1F914}" }];
        const res = await fetch(`${base}/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model, messages, max_tokens: 3, temperature: 0 }),
        });
        const body = await res.json();
        assert.equal(res.status, 200, JSON.stringify(body));
        assert.equal(body.object, "chat.completion");
        const choice = body.choices[0];
        assert.equal(choice.message.role, "assistant");
        assert.equal(typeof choice.message.content, "string");
        assert.ok(["length", "stop"].includes(choice.finish_reason), choice.finish_reason);
        assert.ok(body.usage.completion_tokens >= 1 && body.usage.completion_tokens <= 3);
        // The prompt went through the checkpoint's own tokenizer and chat template.
        const codec = await TokenizerCodec.fromDir(dir);
        const prompt = codec.encode(codec.renderChat(messages, { addGenerationPrompt: true }), {
          addSpecialTokens: false,
        });
        assert.equal(body.usage.prompt_tokens, prompt.length);
      } finally {
        clearTimeout(timer);
        try {
          child.kill("SIGTERM");
        } catch {
          // it has exited already
        }
        await readers;
      }
      // SIGTERM drains and exits 0.
      assert.equal((await child.status).code, 0, log.join("\n"));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
