// Static checks of the deployment files, fast and offline (part of `deno task test`): every Kubernetes manifest
// under deploy/kubernetes/ against the schema subset in k8s_schema.ts, the references between the manifests, the
// Dockerfile's contract (base image argument, Vulkan, NVIDIA capabilities, non-root, HEALTHCHECK, tini, the serve
// command), and docs/DEPLOY.md naming every server environment variable. The slow check that builds and runs the
// image is `deno task container-test` (test/container/run.ts).
import assert from "node:assert/strict";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import { ENV_NAMES } from "../server/config.ts";
import { SCHEMAS, validate, validateManifest } from "./k8s_schema.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const K8S = join(ROOT, "deploy/kubernetes");

// deno-lint-ignore no-explicit-any
type Doc = any;

function yamlFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) out.push(...yamlFiles(p));
    else if (/\.ya?ml$/.test(e.name)) out.push(p);
  }
  return out.sort();
}

function readYaml(path: string): Doc[] {
  const docs = parseAllDocuments(Deno.readTextFileSync(path));
  const out: Doc[] = [];
  for (const d of docs) {
    if (d.errors.length) {
      throw new Error(`${relative(ROOT, path)}: ${d.errors.map((e) => e.message).join("; ")}`);
    }
    const v = d.toJS();
    if (v !== null && v !== undefined) out.push(v);
  }
  return out;
}

/** Every Kubernetes object under deploy/kubernetes (Helm values files are not objects). */
function manifests(): { file: string; doc: Doc }[] {
  const out: { file: string; doc: Doc }[] = [];
  for (const path of yamlFiles(K8S)) {
    if (path.endsWith("-values.yaml")) continue;
    for (const doc of readYaml(path)) out.push({ file: relative(ROOT, path), doc });
  }
  return out;
}

function one(kind: string): Doc {
  const found = manifests().filter((m) => m.doc.kind === kind);
  assert.equal(
    found.length,
    1,
    `expected exactly one ${kind} under deploy/kubernetes, found ${found.length}`,
  );
  return found[0].doc;
}

function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);
}

Deno.test("deploy: every manifest validates against the Kubernetes schema subset", () => {
  const all = manifests();
  assert.ok(all.length >= 8, `expected the manifests under deploy/kubernetes, found ${all.length}`);
  const problems = all.flatMap(({ file, doc }) =>
    validateManifest(doc).map((e) => `${file} ${doc.kind}: ${e}`)
  );
  assert.deepEqual(problems, []);
});

Deno.test("deploy: the validator rejects typos, wrong types, missing and unknown fields", () => {
  const d = structuredClone(one("Deployment"));
  const c = d.spec.template.spec.containers[0];
  c.readinesProbe = c.readinessProbe;
  c.ports[0].containerPort = "8000";
  c.resources.limits["nvidia.com/gpu"] = "one";
  delete d.spec.selector;
  d.spec.template.spec.tolerations[0].operator = "Exist";
  const errs = validate(d, SCHEMAS["apps/v1 Deployment"]);
  const expect = [
    /containers\[0\]\.readinesProbe: unknown field/,
    /containers\[0\]\.ports\[0\]\.containerPort: expected an integer, got string/,
    /limits\.nvidia\.com\/gpu: "one" is not a quantity/,
    /\.spec\.selector: required field is missing/,
    /tolerations\[0\]\.operator: "Exist" is not one of "Exists", "Equal"/,
  ];
  for (const re of expect) {
    assert.ok(errs.some((e) => re.test(e)), `no error matching ${re} in:\n${errs.join("\n")}`);
  }
  assert.equal(errs.length, expect.length, errs.join("\n"));
  assert.match(
    validateManifest({ apiVersion: "apps/v1beta1", kind: "Deployment" })[0],
    /no schema for apiVersion/,
  );
  const pdb = structuredClone(one("PodDisruptionBudget"));
  pdb.spec.minAvailable = 1;
  assert.match(validateManifest(pdb).join("\n"), /set only one of minAvailable, maxUnavailable/);
});

Deno.test("deploy: the Deployment asks for one GPU, probes /health on its port, and outlasts the drain", () => {
  const d = one("Deployment");
  const pod = d.spec.template.spec;
  const c = pod.containers[0];
  const podLabels = d.spec.template.metadata.labels;
  assert.ok(selects(d.spec.selector.matchLabels, podLabels), "the Deployment's selector must match its pods");
  assert.equal(String(c.resources.limits["nvidia.com/gpu"]), "1", "limits must ask for one nvidia.com/gpu");
  const req = c.resources.requests?.["nvidia.com/gpu"];
  if (req !== undefined) assert.equal(String(req), "1", "a GPU request must equal the limit");
  const portNames = new Set(c.ports.map((p: Doc) => p.name));
  const portNumbers = new Set(c.ports.map((p: Doc) => p.containerPort));
  for (const name of ["readinessProbe", "livenessProbe", "startupProbe"]) {
    const probe = c[name];
    assert.ok(probe, `${name} is missing`);
    assert.equal(probe.httpGet?.path, "/health", `${name} must GET /health`);
    const port = probe.httpGet.port;
    assert.ok(portNames.has(port) || portNumbers.has(port), `${name} port ${port} is not a container port`);
  }
  const env = new Map<string, string>(c.env.map((e: Doc) => [e.name, e.value]));
  for (const name of env.keys()) {
    assert.ok(
      ENV_NAMES.includes(name),
      `${name} is not a server setting (server/config.ts: ${ENV_NAMES.join(", ")})`,
    );
  }
  assert.ok(
    portNumbers.has(Number(env.get("TRELLIS_PORT") ?? 8000)),
    "TRELLIS_PORT must be a container port",
  );
  assert.match(
    env.get("TRELLIS_MODEL") ?? "",
    /^\/models\//,
    "TRELLIS_MODEL should name a checkpoint under /models",
  );
  const mounts = new Set(c.volumeMounts.map((m: Doc) => m.mountPath));
  assert.ok(mounts.has("/models"), "the models volume must be mounted at /models");
  const graceS = Number(env.get("TRELLIS_SHUTDOWN_GRACE_MS") ?? 30_000) / 1000;
  const preStopS = Number(
    c.lifecycle?.preStop?.exec?.command?.[1] ?? c.lifecycle?.preStop?.sleep?.seconds ?? 0,
  );
  assert.ok(
    pod.terminationGracePeriodSeconds > graceS + preStopS,
    `terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} must exceed preStop ${preStopS} s + drain ${graceS} s`,
  );
  assert.equal(pod.securityContext.runAsNonRoot, true);
  assert.equal(pod.securityContext.runAsUser, 1993, "the image's user is uid 1993");
});

Deno.test("deploy: Service, PDB, HPA, PodMonitor and InferencePool point at the Deployment's pods", () => {
  const d = one("Deployment");
  const podLabels = d.spec.template.metadata.labels;
  const c = d.spec.template.spec.containers[0];
  const svc = one("Service");
  assert.ok(selects(svc.spec.selector, podLabels), "the Service must select the Deployment's pods");
  for (const p of svc.spec.ports) {
    assert.ok(
      c.ports.some((cp: Doc) => cp.name === p.targetPort || cp.containerPort === p.targetPort),
      `Service targetPort ${p.targetPort} is not a container port`,
    );
  }
  assert.ok(selects(one("PodDisruptionBudget").spec.selector.matchLabels, podLabels), "PDB selector");
  assert.ok(selects(one("PodMonitor").spec.selector.matchLabels, podLabels), "PodMonitor selector");
  const pool = one("InferencePool");
  assert.ok(selects(pool.spec.selector.matchLabels, podLabels), "InferencePool selector");
  assert.ok(
    c.ports.some((p: Doc) => p.containerPort === pool.spec.targetPorts[0].number),
    "InferencePool port",
  );
  const route = one("HTTPRoute");
  assert.ok(
    route.spec.rules.some((r: Doc) =>
      r.backendRefs?.some((b: Doc) => b.kind === "InferencePool" && b.name === pool.metadata.name)
    ),
    "the HTTPRoute must send traffic to the InferencePool",
  );

  const hpa = one("HorizontalPodAutoscaler");
  assert.deepEqual(
    [hpa.spec.scaleTargetRef.kind, hpa.spec.scaleTargetRef.name],
    ["Deployment", d.metadata.name],
    "the HPA must scale the Deployment",
  );
  assert.equal(d.spec.replicas, undefined, "leave replicas to the HPA");
  assert.ok(hpa.spec.minReplicas <= hpa.spec.maxReplicas);
  const metric = hpa.spec.metrics.find((m: Doc) => m.type === "Pods")?.pods.metric.name;
  // The adapter rule must turn the server's gauge into the metric the HPA asks for.
  const values = readYaml(join(K8S, "monitoring/prometheus-adapter-values.yaml"))[0];
  const rule = values.rules.custom.find((r: Doc) => r.name?.as === metric);
  assert.ok(rule, `no prometheus-adapter rule exposes ${metric}`);
  assert.match(rule.seriesQuery, /^vllm:num_requests_waiting\{/);
  assert.ok(new RegExp(rule.name.matches).test("vllm:num_requests_waiting"));
  assert.deepEqual(Object.keys(rule.resources.overrides).sort(), ["namespace", "pod"]);
  const served = Deno.readTextFileSync(join(ROOT, "server/metrics.ts"));
  for (
    const gauge of ["vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc"]
  ) {
    assert.ok(served.includes(`"${gauge}"`), `the server no longer exports ${gauge}, which the HPA/EPP read`);
  }
});

Deno.test("deploy: the kustomization lists every base manifest and the files it names exist", () => {
  const k = readYaml(join(K8S, "kustomization.yaml"))[0];
  const base = [...Deno.readDirSync(K8S)]
    .filter((e) => e.isFile && /\.yaml$/.test(e.name) && e.name !== "kustomization.yaml")
    .map((e) => e.name)
    .sort();
  assert.deepEqual([...k.resources].sort(), base);
  const d = one("Deployment");
  assert.ok(k.images.some((i: Doc) => i.name === d.spec.template.spec.containers[0].image), "images[] name");
});

/** Dockerfile instructions with continuation lines joined and comments dropped. */
function dockerfile(): { op: string; args: string }[] {
  const text = Deno.readTextFileSync(join(ROOT, "Dockerfile"));
  const out: { op: string; args: string }[] = [];
  let cur = "";
  for (const raw of text.split("\n")) {
    if (/^\s*#/.test(raw)) continue;
    const line = raw.replace(/\s+$/, "");
    if (line.endsWith("\\")) {
      cur += line.slice(0, -1) + " ";
      continue;
    }
    cur += line;
    if (cur.trim()) {
      const m = cur.trim().match(/^(\w+)\s+([\s\S]*)$/);
      assert.ok(m, `cannot parse Dockerfile line: ${cur}`);
      out.push({ op: m[1].toUpperCase(), args: m[2] });
    }
    cur = "";
  }
  return out;
}

Deno.test("deploy: Dockerfile keeps its contract", () => {
  const ins = dockerfile();
  const ops = (op: string) => ins.filter((i) => i.op === op);
  const denoVersion = Deno.readTextFileSync(join(ROOT, ".ci/run")).match(/^want=(\S+)$/m)?.[1];
  assert.ok(denoVersion, ".ci/run pins the Deno version");

  // The base image is the only build argument, defaulting to the pinned official Debian image.
  assert.deepEqual(ops("ARG").map((i) => i.args), [`BASE_IMAGE=denoland/deno:debian-${denoVersion}`]);
  assert.deepEqual(ops("FROM").map((i) => i.args), ["${BASE_IMAGE}"]);

  const run = ops("RUN").map((i) => i.args).join("\n");
  for (const pkg of ["libvulkan1", "mesa-vulkan-drivers"]) assert.match(run, new RegExp(`\\b${pkg}\\b`));

  const env = new Map<string, string>();
  for (const i of ops("ENV")) for (const [, k, v] of i.args.matchAll(/(\w+)=(\S+)/g)) env.set(k, v);
  assert.equal(env.get("NVIDIA_VISIBLE_DEVICES"), "all");
  assert.deepEqual(env.get("NVIDIA_DRIVER_CAPABILITIES")?.split(",").sort(), [
    "compute",
    "graphics",
    "utility",
  ]);
  assert.equal(env.get("TRELLIS_HOST"), "0.0.0.0", "listen on all interfaces inside the container");
  for (const k of env.keys()) {
    if (k.startsWith("TRELLIS_")) assert.ok(ENV_NAMES.includes(k), `${k} is not a server setting`);
  }

  const users = ops("USER").map((i) => i.args);
  assert.match(users.at(-1) ?? "", /^[1-9][0-9]*(:[0-9]+)?$/, "the last USER must be a numeric non-root uid");

  // Dependencies in their own layer: deno.json and deno.lock copied and installed before the sources.
  const idx = (pred: (i: { op: string; args: string }) => boolean) => ins.findIndex(pred);
  const copyLock = idx((i) => i.op === "COPY" && /deno\.json/.test(i.args) && /deno\.lock/.test(i.args));
  const install = idx((i) => i.op === "RUN" && /\bdeno install\b/.test(i.args) && /--frozen/.test(i.args));
  const copyAll = idx((i) => i.op === "COPY" && /^\.\s+\.\/?$/.test(i.args.trim()));
  assert.ok(
    copyLock >= 0 && copyLock < install && install < copyAll,
    "COPY deno.json deno.lock; RUN deno install; COPY . .",
  );

  const hc = ops("HEALTHCHECK");
  assert.equal(hc.length, 1);
  const hcCmd = JSON.parse(hc[0].args.slice(hc[0].args.indexOf("CMD") + 3).trim());
  assert.ok(
    Array.isArray(hcCmd) && hcCmd.join(" ").includes("/health"),
    "HEALTHCHECK CMD in exec form on /health",
  );

  // Exec form with tini first; the deno command is `deno task serve`'s plus --cached-only.
  const entry = JSON.parse(ops("ENTRYPOINT").at(-1)!.args);
  assert.deepEqual(entry.slice(0, 2), ["/tini", "--"]);
  const serve: string = JSON.parse(Deno.readTextFileSync(join(ROOT, "deno.json"))).tasks.serve;
  assert.deepEqual(entry.slice(2).filter((a: string) => a !== "--cached-only"), serve.split(/\s+/));
  assert.deepEqual(ops("STOPSIGNAL").map((i) => i.args), ["SIGTERM"]);
});

Deno.test("deploy: .dockerignore keeps the model and sources in the build context", () => {
  const ignored = Deno.readTextFileSync(join(ROOT, ".dockerignore")).split("\n").map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  for (
    const needed of [
      "main.ts",
      "deno.json",
      "deno.lock",
      "models",
      "server",
      "text",
      "grammar",
      "engine",
      "kernels",
      "cli",
    ]
  ) {
    assert.ok(!ignored.includes(needed) && !ignored.includes(`${needed}/`), `.dockerignore drops ${needed}`);
  }
  assert.ok(ignored.includes(".git"), ".dockerignore should drop .git");
});

Deno.test("deploy: docs/DEPLOY.md names every server environment variable", () => {
  const doc = Deno.readTextFileSync(join(ROOT, "docs/DEPLOY.md"));
  const missing = ENV_NAMES.filter((n) => !doc.includes(n));
  assert.deepEqual(missing, [], "document these in docs/DEPLOY.md");
});

Deno.test("deploy: deno.lock matches deno.json's imports (the image's `deno install --frozen` layer)", () => {
  const config = JSON.parse(Deno.readTextFileSync(join(ROOT, "deno.json")));
  const lock = JSON.parse(Deno.readTextFileSync(join(ROOT, "deno.lock")));
  const wanted = Object.values(config.imports as Record<string, string>)
    .filter((s) => /^(npm|jsr):/.test(s))
    .sort();
  assert.deepEqual(
    [...(lock.workspace?.dependencies ?? [])].sort(),
    wanted,
    "deno.lock is stale: run deno install to update it, or the Docker build fails at deno install --frozen",
  );
  for (const spec of wanted) {
    assert.ok(spec in (lock.specifiers ?? {}), `deno.lock has no resolution for ${spec}: run deno install`);
  }
});
