// What a green run stands on: a WebGPU adapter (TRELLIS_REQUIRE_GPU=1, set by .ci/run, which installs
// lavapipe) and the shared fixtures with every file their manifest lists (TRELLIS_REQUIRE_FIXTURES=1, set by
// .ci/run when the fixtures were provided). Without the switches, tests that need what is missing show as
// ignored and this module says so once, loudly; the switches themselves are checked on child test runs.
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { FIXTURES_DIR, hasWebGpu, noFixtures, REQUIRE_FIXTURES, REQUIRE_GPU } from "./support/mod.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const HAVE_GPU = await hasWebGpu();

if (!HAVE_GPU || noFixtures()) {
  const missing = [
    ...(HAVE_GPU ? [] : ["a WebGPU adapter: every GPU test (kernels, engine, real server) is ignored"]),
    ...(noFixtures()
      ? [`the fixtures at "${FIXTURES_DIR}": the comparisons with the official QTIP code are ignored`]
      : []),
  ];
  console.warn(`\n*** This run does not check everything. Missing:\n***   ${missing.join("\n***   ")}\n`);
}

Deno.test({
  name: "a WebGPU adapter is present (TRELLIS_REQUIRE_GPU=1)",
  ignore: !REQUIRE_GPU,
  async fn() {
    assert.ok(await hasWebGpu(), "TRELLIS_REQUIRE_GPU=1 but there is no WebGPU adapter");
  },
});

interface ManifestFile {
  path: string;
  bytes: number;
  sha256: string;
}

Deno.test({
  name: "every file of the fixtures' manifest is present with its size and sha256",
  ignore: !REQUIRE_FIXTURES && noFixtures(),
  async fn() {
    const manifest = JSON.parse(await Deno.readTextFile(`${FIXTURES_DIR}manifest.json`));
    const files = manifest.files as ManifestFile[];
    assert.ok(files.length > 0, "the manifest lists no files");
    for (const f of files) {
      const data = await Deno.readFile(`${FIXTURES_DIR}${f.path}`);
      assert.equal(data.byteLength, f.bytes, `${f.path}: size`);
      const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
      const hex = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
      assert.equal(hex, f.sha256, `${f.path}: sha256`);
    }
  },
});

/** Runs `deno test` on one module with `env` added; its exit code and output. */
async function childTest(
  module: string,
  env: Record<string, string>,
): Promise<{ code: number; out: string }> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "--no-check", module],
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code, out: dec.decode(stdout) + dec.decode(stderr) };
}

/** The "N passed | M failed | K ignored" counts of a deno test summary. */
function counts(out: string): { passed: number; failed: number; ignored: number } {
  const m = out.match(/(\d+) passed \| (\d+) failed(?: \| (\d+) ignored)?/);
  assert.ok(m, `no test summary in:\n${out}`);
  return { passed: Number(m[1]), failed: Number(m[2]), ignored: Number(m[3] ?? 0) };
}

// Vulkan only, with an ICD list naming no driver: the child process sees no adapter (without the backend
// pin, wgpu falls back to llvmpipe through OpenGL).
const NO_ADAPTER = {
  DENO_WEBGPU_BACKEND: "vulkan",
  VK_ICD_FILENAMES: "/nonexistent-icd.json",
  VK_DRIVER_FILES: "/nonexistent-icd.json",
};

Deno.test("without an adapter, GPU tests are ignored (not passed), and fail under TRELLIS_REQUIRE_GPU=1", async () => {
  const relaxed = await childTest("kernels/gather/gather_test.ts", {
    ...NO_ADAPTER,
    TRELLIS_REQUIRE_GPU: "0",
  });
  assert.equal(relaxed.code, 0, relaxed.out);
  const c = counts(relaxed.out);
  assert.ok(c.ignored >= 3 && c.passed === 0, relaxed.out);
  assert.match(relaxed.out, /Skipping GPU tests: no WebGPU adapter/);
  const strict = await childTest("kernels/gather/gather_test.ts", {
    ...NO_ADAPTER,
    TRELLIS_REQUIRE_GPU: "1",
  });
  assert.notEqual(strict.code, 0, strict.out);
  assert.ok(counts(strict.out).failed >= 3, strict.out);
  assert.match(strict.out, /No WebGPU adapter/);
});

Deno.test("without the fixtures, fixture tests are ignored, and fail under TRELLIS_REQUIRE_FIXTURES=1", async () => {
  const absent = { TRELLIS_FIXTURES: "/nonexistent-fixtures" };
  const relaxed = await childTest("engine/model_config_test.ts", {
    ...absent,
    TRELLIS_REQUIRE_FIXTURES: "0",
  });
  assert.equal(relaxed.code, 0, relaxed.out);
  assert.equal(counts(relaxed.out).ignored, 1, relaxed.out);
  assert.match(relaxed.out, /Skipping fixture tests: no fixtures at "\/nonexistent-fixtures\/"/);
  const strict = await childTest("engine/model_config_test.ts", { ...absent, TRELLIS_REQUIRE_FIXTURES: "1" });
  assert.notEqual(strict.code, 0, strict.out);
  assert.equal(counts(strict.out).failed, 1, strict.out);
  assert.match(strict.out, /\/nonexistent-fixtures\/llama2-style-fp16/);
});
