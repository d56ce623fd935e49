// The container release check (`deno task container-test`): builds the real Dockerfile with buildah against a
// local stand-in for the Deno base image (test/container/standin.sh), then for each scenario starts the image's
// own entrypoint, waits for /health, runs the image's HEALTHCHECK command, streams a chat completion with the
// openai client, reads /metrics, sends SIGTERM to the container's init (as `docker stop` does) and checks a clean
// exit. Scenarios: the embedded model with no volume; a fixture checkpoint mounted under /models and chosen by
// TRELLIS_MODEL (when ../shared/fixtures or TRELLIS_FIXTURES exists).
//
// Too slow for CI (a cold build downloads Debian and Mesa and copies layers with the vfs driver), so it is run
// before each release; see docs/DEPLOY.md. Needs root, buildah and debootstrap
// (apt-get install -y buildah debootstrap), and network access to a Debian mirror and the npm registry.
//
//   deno task container-test [--rebuild-base] [--keep] [--no-mounted] [--health-timeout-s 600] [--json FILE]
//                            [--context DIR]   (the build context; default: this repository)
import OpenAI from "openai";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { basename, dirname, join } from "node:path";
import { fixturesDir } from "../support/mod.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const IMAGE = "localhost/trellis:container-test";
const BUILDAH = ["buildah", "--storage-driver", "vfs"];

interface ImageConfig {
  User?: string;
  Env?: string[];
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  WorkingDir?: string;
  Healthcheck?: { Test?: string[] };
  StopSignal?: string;
  ExposedPorts?: Record<string, unknown>;
}

interface Scenario {
  name: string;
  volumes: string[];
  env: Record<string, string>;
  /** The checkpoint directory /v1/models must report as `root` (proves TRELLIS_MODEL chose the mount). */
  expectRoot?: string;
}

interface ScenarioResult {
  name: string;
  healthy_s: number;
  healthcheck_exit: number;
  model: string;
  chunks: number;
  text: string;
  finish_reason: string | null;
  stream_s: number;
  exit_code: number;
  stop_s: number;
}

function log(msg: string) {
  console.error(`container-test: ${msg}`);
}

function fail(msg: string): never {
  throw new Error(msg);
}

/** Runs a command to completion; throws with its stderr when it fails. */
async function capture(cmd: string[], opts: { cwd?: string } = {}): Promise<string> {
  const out = await new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    cwd: opts.cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    fail(`${cmd.join(" ")} exited with ${out.code}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return text;
}

/** Runs a command with its output on our stderr; throws when it fails. */
async function stream(cmd: string[], opts: { cwd?: string } = {}): Promise<string> {
  const child = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    cwd: opts.cwd,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let stdout = "";
  for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
    stdout += chunk;
    await Deno.stderr.write(new TextEncoder().encode(chunk));
  }
  const status = await child.status;
  if (!status.success) fail(`${cmd.join(" ")} exited with ${status.code}`);
  return stdout;
}

async function which(name: string): Promise<boolean> {
  try {
    return (await new Deno.Command("sh", { args: ["-c", `command -v ${name}`], stdout: "null" }).output())
      .success;
  } catch {
    return false;
  }
}

function seconds(since: number): number {
  return Math.round((performance.now() - since) / 100) / 10;
}

/** The image facts the deployment relies on; returns what is wrong. */
export function checkImageConfig(c: ImageConfig): string[] {
  const problems: string[] = [];
  const env = new Map((c.Env ?? []).map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]));
  const user = (c.User ?? "").split(":")[0];
  if (!/^[0-9]+$/.test(user) || user === "0") {
    problems.push(
      `User is "${c.User ?? ""}": expected a numeric non-root uid (Kubernetes runAsNonRoot checks it)`,
    );
  }
  if (env.get("NVIDIA_VISIBLE_DEVICES") !== "all") problems.push("NVIDIA_VISIBLE_DEVICES is not all");
  const caps = (env.get("NVIDIA_DRIVER_CAPABILITIES") ?? "").split(",");
  for (const cap of ["compute", "utility", "graphics"]) {
    if (!caps.includes(cap) && !caps.includes("all")) {
      problems.push(`NVIDIA_DRIVER_CAPABILITIES lacks ${cap}`);
    }
  }
  if (env.get("TRELLIS_HOST") !== "0.0.0.0") {
    problems.push("TRELLIS_HOST is not 0.0.0.0 (unreachable from outside)");
  }
  if (c.Healthcheck?.Test?.[0] !== "CMD") problems.push("no exec-form HEALTHCHECK");
  if (c.Entrypoint?.[0] !== "/tini") problems.push("ENTRYPOINT does not start with /tini (signals, zombies)");
  if ((c.StopSignal ?? "SIGTERM") !== "SIGTERM") {
    problems.push(`StopSignal is ${c.StopSignal}, expected SIGTERM`);
  }
  return problems;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Children of each pid, from /proc. */
function processTree(): Map<number, { ppid: number; argv: string[] }> {
  const out = new Map<number, { ppid: number; argv: string[] }>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^[0-9]+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const argv = Deno.readTextFileSync(`/proc/${e.name}/cmdline`).split("\0").filter((s) => s !== "");
      out.set(Number(e.name), { ppid, argv });
    } catch {
      // the process ended while we looked
    }
  }
  return out;
}

/** The container's init: the first descendant of `pid` that runs the image's entrypoint binary. */
function findInit(pid: number, entry: string): number | null {
  const tree = processTree();
  const queue = [pid];
  while (queue.length) {
    const p = queue.shift()!;
    for (const [child, info] of tree) {
      if (info.ppid !== p) continue;
      if (info.argv[0] === entry) return child;
      queue.push(child);
    }
  }
  return null;
}

async function runScenario(
  scenario: Scenario,
  ctr: string,
  config: ImageConfig,
  healthTimeoutS: number,
): Promise<ScenarioResult> {
  const port = freePort();
  const base = `http://127.0.0.1:${port}`;
  const env = { TRELLIS_PORT: String(port), TINI_SUBREAPER: "1", ...scenario.env };
  const runArgs = ["run", "--isolation", "chroot"];
  if (config.User) runArgs.push("--user", config.User);
  if (config.WorkingDir) runArgs.push("--workingdir", config.WorkingDir);
  for (const [k, v] of Object.entries(env)) runArgs.push("--env", `${k}=${v}`);
  for (const v of scenario.volumes) runArgs.push("--volume", v);
  const entry = [...(config.Entrypoint ?? []), ...(config.Cmd ?? [])];
  if (entry.length === 0) fail("the image has neither ENTRYPOINT nor CMD");
  log(`[${scenario.name}] starting ${entry.join(" ")} on port ${port}`);

  const started = performance.now();
  const child = new Deno.Command(BUILDAH[0], {
    args: [...BUILDAH.slice(1), ...runArgs, ctr, "--", ...entry],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let output = "";
  const pump = (s: ReadableStream<Uint8Array>) =>
    (async () => {
      for await (const chunk of s.pipeThrough(new TextDecoderStream())) {
        output += chunk;
        for (const line of chunk.split("\n")) if (line) console.error(`  [${scenario.name}] ${line}`);
      }
    })();
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  let exited: Deno.CommandStatus | null = null;
  const status = child.status.then((s) => (exited = s));

  try {
    // 1. /health
    let healthy = false;
    while (!healthy && exited === null && seconds(started) < healthTimeoutS) {
      try {
        const r = await fetch(`${base}/health`, { signal: AbortSignal.timeout(2000) });
        await r.body?.cancel();
        healthy = r.ok;
      } catch {
        // not listening yet
      }
      if (!healthy) await new Promise((r) => setTimeout(r, 500));
    }
    if (exited !== null) {
      fail(`[${scenario.name}] the server exited with ${exited!.code} before /health answered`);
    }
    if (!healthy) fail(`[${scenario.name}] /health did not answer 200 within ${healthTimeoutS} s`);
    const healthyS = seconds(started);
    log(`[${scenario.name}] healthy after ${healthyS} s`);

    // 2. The image's own HEALTHCHECK command, in the same container.
    const hc = config.Healthcheck?.Test ?? [];
    const hcArgs = ["run", "--isolation", "chroot"];
    if (config.User) hcArgs.push("--user", config.User);
    hcArgs.push("--env", `TRELLIS_PORT=${port}`);
    const hcOut = await new Deno.Command(BUILDAH[0], {
      args: [...BUILDAH.slice(1), ...hcArgs, ctr, "--", ...hc.slice(1)],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (hcOut.code !== 0) {
      fail(
        `[${scenario.name}] HEALTHCHECK exited with ${hcOut.code}: ${new TextDecoder().decode(hcOut.stderr)}`,
      );
    }

    // 3. A streamed chat completion through the official client.
    const client = new OpenAI({
      baseURL: `${base}/v1`,
      apiKey: "container-test",
      maxRetries: 0,
      timeout: 300_000,
    });
    const models = await client.models.list();
    const model = models.data[0]?.id ?? fail(`[${scenario.name}] /v1/models lists no model`);
    const root = (models.data[0] as { root?: string }).root;
    if (scenario.expectRoot !== undefined && root !== scenario.expectRoot) {
      fail(`[${scenario.name}] /v1/models reports root ${root}, expected ${scenario.expectRoot}`);
    }
    const t0 = performance.now();
    const completion = await client.chat.completions.create({
      model,
      messages: [{ role: "user", content: "Who was the father of Enos?" }],
      max_tokens: 16,
      temperature: 0,
      stream: true,
    });
    let text = "";
    let chunks = 0;
    let finish: string | null = null;
    for await (const chunk of completion) {
      chunks++;
      const choice = chunk.choices[0];
      text += choice?.delta?.content ?? "";
      finish = choice?.finish_reason ?? finish;
    }
    const streamS = seconds(t0);
    log(
      `[${scenario.name}] ${model}: ${chunks} chunks in ${streamS} s, finish ${finish}: ${
        JSON.stringify(text)
      }`,
    );
    if (text.length === 0) fail(`[${scenario.name}] the stream carried no content`);
    if (finish !== "length" && finish !== "stop") fail(`[${scenario.name}] finish_reason ${finish}`);

    // 4. The gauge the HPA and the inference gateway's endpoint picker read.
    const metrics = await (await fetch(`${base}/metrics`)).text();
    if (!/^vllm:num_requests_waiting[{ ]/m.test(metrics)) {
      fail(`[${scenario.name}] /metrics has no vllm:num_requests_waiting`);
    }

    // 5. docker stop: SIGTERM to the container's init, which forwards it to the server.
    const init = findInit(child.pid, entry[0]) ??
      fail(`[${scenario.name}] cannot find ${entry[0]} under buildah`);
    const t1 = performance.now();
    Deno.kill(init, "SIGTERM");
    const stopTimeout = setTimeout(() => {
      log(`[${scenario.name}] still running 60 s after SIGTERM; killing it`);
      try {
        Deno.kill(init, "SIGKILL");
      } catch { /* gone */ }
    }, 60_000);
    const s = await status;
    clearTimeout(stopTimeout);
    await pumps;
    const stopS = seconds(t1);
    log(`[${scenario.name}] exited with ${s.code} ${stopS} s after SIGTERM`);
    if (s.code !== 0) fail(`[${scenario.name}] exit code ${s.code} after SIGTERM, expected 0`);
    return {
      name: scenario.name,
      healthy_s: healthyS,
      healthcheck_exit: hcOut.code,
      model,
      chunks,
      text,
      finish_reason: finish,
      stream_s: streamS,
      exit_code: s.code,
      stop_s: stopS,
    };
  } catch (err) {
    if (exited === null) {
      const init = findInit(child.pid, entry[0]);
      try {
        if (init !== null) Deno.kill(init, "SIGKILL");
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await status;
    }
    await pumps;
    if (!output.trim()) log(`[${scenario.name}] the server printed nothing`);
    throw err;
  }
}

async function main() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      "rebuild-base": { type: "boolean", default: false },
      keep: { type: "boolean", default: false },
      "no-mounted": { type: "boolean", default: false },
      "health-timeout-s": { type: "string", default: "600" },
      json: { type: "string" },
      context: { type: "string", default: ROOT },
    },
    strict: true,
  });
  const healthTimeoutS = Number(values["health-timeout-s"]);
  if (!(healthTimeoutS > 0)) fail(`--health-timeout-s: expected a positive number of seconds`);

  if (Deno.uid() !== 0) fail("must run as root: buildah with the vfs driver and debootstrap need it");
  for (const tool of ["buildah", "debootstrap"]) {
    if (!(await which(tool))) fail(`${tool} not found: apt-get install -y buildah debootstrap`);
  }

  const t0 = performance.now();
  const standin = ["bash", join(ROOT, "test/container/standin.sh")];
  if (values["rebuild-base"]) standin.push("--rebuild");
  const base = (await stream(standin)).trim().split("\n").pop()!;
  const baseS = seconds(t0);
  log(`base image ${base} ready in ${baseS} s`);

  const t1 = performance.now();
  await stream([
    ...BUILDAH,
    "bud",
    "--pull=never",
    "--isolation",
    "chroot",
    "--layers",
    "--format",
    "docker",
    "--build-arg",
    `BASE_IMAGE=${base}`,
    "-t",
    IMAGE,
    "-f",
    join(values.context, "Dockerfile"),
    values.context,
  ]);
  const buildS = seconds(t1);
  log(`built ${IMAGE} in ${buildS} s`);

  const info = JSON.parse(await capture([...BUILDAH, "inspect", "--type", "image", IMAGE]));
  const config: ImageConfig = info.Docker?.config ?? info.OCIv1?.config ?? {};
  const problems = checkImageConfig(config);
  if (problems.length) fail(`image config: ${problems.join("; ")}`);
  const sizeLine = (await capture([...BUILDAH, "images", "--format", "{{.Size}}", IMAGE])).trim();

  const scenarios: Scenario[] = [
    { name: "embedded", volumes: [], env: {}, expectRoot: `${config.WorkingDir}/models/llama2-qtip-2bit` },
  ];
  // fixturesDir() says why when the fixtures are absent; the stat below then fails too.
  const fixtures = fixturesDir() ?? "";
  const fixtureModel = join(fixtures, "llama2-style-qtip-2bit-hyb");
  if (!values["no-mounted"]) {
    try {
      Deno.statSync(join(fixtureModel, "config.json"));
      // The QTIP checkpoint holds no tokenizer; its config names the fp16 directory next to it, so mount both.
      scenarios.push({
        name: "mounted",
        volumes: [`${fixtures}:/models/fixtures:ro`],
        env: { TRELLIS_MODEL: `/models/fixtures/${basename(fixtureModel)}` },
        expectRoot: `/models/fixtures/${basename(fixtureModel)}`,
      });
    } catch {
      log(`no fixture checkpoint at ${fixtureModel}: skipping the mounted-model scenario`);
    }
  }

  const results: ScenarioResult[] = [];
  for (const scenario of scenarios) {
    const ctr = (await capture([...BUILDAH, "from", "--pull=never", IMAGE])).trim();
    try {
      results.push(await runScenario(scenario, ctr, config, healthTimeoutS));
    } finally {
      if (!values.keep) await capture([...BUILDAH, "rm", ctr]).catch((e) => log(String(e)));
    }
  }

  const summary = {
    image: IMAGE,
    base,
    image_size: sizeLine,
    base_s: baseS,
    build_s: buildS,
    scenarios: results,
  };
  console.log(JSON.stringify(summary, null, 2));
  if (values.json) {
    Deno.mkdirSync(dirname(values.json), { recursive: true });
    Deno.writeTextFileSync(values.json, JSON.stringify(summary, null, 2) + "\n");
  }
}

if (import.meta.main) {
  try {
    await main();
    log("passed");
  } catch (err) {
    log(`FAILED: ${err instanceof Error ? err.message : String(err)}`);
    Deno.exit(1);
  }
}
