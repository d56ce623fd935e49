// A strict subset of the Kubernetes API schemas, for the objects and fields deploy/kubernetes/ uses, and a small
// validator for it. Field names, types, required fields, enums and bounds follow the Kubernetes API reference
// (apps/v1, core/v1, policy/v1, autoscaling/v2), the Prometheus Operator's monitoring.coreos.com/v1 PodMonitor, the
// Gateway API's gateway.networking.k8s.io/v1 HTTPRoute and the Gateway API Inference Extension's
// inference.networking.k8s.io/v1 InferencePool. Like `kubectl apply --validate=strict`, a field the schema does not
// know is an error: that catches the typo that the API server would otherwise drop silently (readinesProbe).
// A field of the real API that the manifests do not use is missing here; add it when a manifest needs it.

export type Schema =
  | { t: "str"; enum?: readonly string[]; pattern?: RegExp; what?: string }
  | { t: "int"; min?: number; max?: number }
  | { t: "bool" }
  | { t: "quantity" }
  | { t: "intOrStr" }
  | { t: "arr"; of: Schema; min?: number; max?: number }
  | { t: "map"; of: Schema; keys?: RegExp }
  | { t: "obj"; props: Record<string, Schema>; required?: readonly string[]; oneOf?: readonly string[] }
  | { t: "any" };

const str = (opts: { enum?: readonly string[]; pattern?: RegExp; what?: string } = {}): Schema => ({
  t: "str",
  ...opts,
});
const int = (min?: number, max?: number): Schema => ({ t: "int", min, max });
const bool: Schema = { t: "bool" };
const quantity: Schema = { t: "quantity" };
const intOrStr: Schema = { t: "intOrStr" };
const arr = (of: Schema, min?: number, max?: number): Schema => ({ t: "arr", of, min, max });
const map = (of: Schema, keys?: RegExp): Schema => ({ t: "map", of, keys });
const obj = (
  props: Record<string, Schema>,
  required: readonly string[] = [],
  oneOf?: readonly string[],
): Schema => ({
  t: "obj",
  props,
  required,
  oneOf,
});
const any: Schema = { t: "any" };

/** RFC 1123 label (container names, port names' alphabet, namespaces). */
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** RFC 1123 subdomain (most object names). */
const DNS_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** IANA service name: what a named container port must be. */
const PORT_NAME = /^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]([a-z0-9]|-(?=[a-z0-9]))*$/;
/** Label keys: an optional DNS-subdomain prefix and a name of at most 63 characters. */
const LABEL_KEY =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$/;
/** Kubernetes resource quantities: 1, 1.5, 500m, 16Gi, 1e3. */
const QUANTITY = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?$/;
const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;

const labels = map(str({ pattern: LABEL_VALUE, what: "a label value" }), LABEL_KEY);
const metadata = obj({
  name: str({ pattern: DNS_SUBDOMAIN, what: "an RFC 1123 subdomain" }),
  namespace: str({ pattern: DNS_LABEL, what: "an RFC 1123 label" }),
  labels,
  annotations: map(str(), LABEL_KEY),
}, ["name"]);
const templateMetadata = obj({ labels, annotations: map(str(), LABEL_KEY) });

const labelSelector = obj({
  matchLabels: labels,
  matchExpressions: arr(obj({
    key: str({ pattern: LABEL_KEY }),
    operator: str({ enum: ["In", "NotIn", "Exists", "DoesNotExist"] }),
    values: arr(str()),
  }, ["key", "operator"])),
});

const httpGet = obj({
  path: str({ pattern: /^\//, what: "an absolute path" }),
  port: intOrStr,
  host: str(),
  scheme: str({ enum: ["HTTP", "HTTPS"] }),
  httpHeaders: arr(obj({ name: str(), value: str() }, ["name", "value"])),
}, ["port"]);
const execAction = obj({ command: arr(str(), 1) }, ["command"]);
const probe = obj(
  {
    httpGet,
    exec: execAction,
    tcpSocket: obj({ port: intOrStr, host: str() }, ["port"]),
    grpc: obj({ port: int(1, 65535), service: str() }, ["port"]),
    initialDelaySeconds: int(0),
    periodSeconds: int(1),
    timeoutSeconds: int(1),
    successThreshold: int(1),
    failureThreshold: int(1),
    terminationGracePeriodSeconds: int(1),
  },
  [],
  ["httpGet", "exec", "tcpSocket", "grpc"],
);
const lifecycleHandler = obj(
  { exec: execAction, httpGet, sleep: obj({ seconds: int(0) }, ["seconds"]) },
  [],
  [
    "exec",
    "httpGet",
    "sleep",
  ],
);

const keyRef = obj({ name: str(), key: str(), optional: bool }, ["key"]);
const envVar = obj({
  name: str({ pattern: ENV_NAME, what: "an environment variable name" }),
  value: str(),
  valueFrom: obj(
    {
      secretKeyRef: keyRef,
      configMapKeyRef: keyRef,
      fieldRef: obj({ fieldPath: str(), apiVersion: str() }, ["fieldPath"]),
      resourceFieldRef: obj({ resource: str(), containerName: str(), divisor: quantity }, ["resource"]),
    },
    [],
    ["secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef"],
  ),
}, ["name"]);
const seccompProfile = obj({
  type: str({ enum: ["RuntimeDefault", "Unconfined", "Localhost"] }),
  localhostProfile: str(),
}, ["type"]);

const container = obj({
  name: str({ pattern: DNS_LABEL, what: "an RFC 1123 label" }),
  image: str(),
  imagePullPolicy: str({ enum: ["Always", "IfNotPresent", "Never"] }),
  command: arr(str()),
  args: arr(str()),
  workingDir: str(),
  env: arr(envVar),
  envFrom: arr(obj({
    prefix: str(),
    configMapRef: obj({ name: str(), optional: bool }),
    secretRef: obj({ name: str(), optional: bool }),
  })),
  ports: arr(obj({
    name: str({ pattern: PORT_NAME, what: "an IANA service name (at most 15 characters)" }),
    containerPort: int(1, 65535),
    protocol: str({ enum: ["TCP", "UDP", "SCTP"] }),
    hostPort: int(1, 65535),
  }, ["containerPort"])),
  resources: obj({ requests: map(quantity), limits: map(quantity) }),
  startupProbe: probe,
  readinessProbe: probe,
  livenessProbe: probe,
  lifecycle: obj({ preStop: lifecycleHandler, postStart: lifecycleHandler }),
  volumeMounts: arr(obj({
    name: str(),
    mountPath: str({ pattern: /^\//, what: "an absolute path" }),
    readOnly: bool,
    subPath: str(),
  }, ["name", "mountPath"])),
  securityContext: obj({
    allowPrivilegeEscalation: bool,
    readOnlyRootFilesystem: bool,
    runAsNonRoot: bool,
    runAsUser: int(0),
    runAsGroup: int(0),
    privileged: bool,
    capabilities: obj({ add: arr(str()), drop: arr(str()) }),
    seccompProfile,
  }),
  terminationMessagePolicy: str({ enum: ["File", "FallbackToLogsOnError"] }),
}, ["name"]);

const volume = obj(
  {
    name: str({ pattern: DNS_LABEL, what: "an RFC 1123 label" }),
    persistentVolumeClaim: obj({ claimName: str(), readOnly: bool }, ["claimName"]),
    emptyDir: obj({ medium: str({ enum: ["", "Memory"] }), sizeLimit: quantity }),
    hostPath: obj({
      path: str(),
      type: str({
        enum: [
          "",
          "DirectoryOrCreate",
          "Directory",
          "FileOrCreate",
          "File",
          "Socket",
          "CharDevice",
          "BlockDevice",
        ],
      }),
    }, ["path"]),
    configMap: obj({ name: str(), optional: bool, defaultMode: int(0, 0o777) }),
    secret: obj({ secretName: str(), optional: bool, defaultMode: int(0, 0o777) }),
  },
  ["name"],
  ["persistentVolumeClaim", "emptyDir", "hostPath", "configMap", "secret"],
);

const podSpec = obj({
  containers: arr(container, 1),
  initContainers: arr(container),
  volumes: arr(volume),
  securityContext: obj({
    runAsNonRoot: bool,
    runAsUser: int(0),
    runAsGroup: int(0),
    fsGroup: int(0),
    supplementalGroups: arr(int(0)),
    seccompProfile,
  }),
  terminationGracePeriodSeconds: int(0),
  nodeSelector: map(str()),
  tolerations: arr(obj({
    key: str(),
    operator: str({ enum: ["Exists", "Equal"] }),
    value: str(),
    effect: str({ enum: ["NoSchedule", "PreferNoSchedule", "NoExecute"] }),
    tolerationSeconds: int(),
  })),
  affinity: any,
  topologySpreadConstraints: arr(obj({
    maxSkew: int(1),
    topologyKey: str(),
    whenUnsatisfiable: str({ enum: ["DoNotSchedule", "ScheduleAnyway"] }),
    labelSelector,
  }, ["maxSkew", "topologyKey", "whenUnsatisfiable"])),
  runtimeClassName: str({ pattern: DNS_SUBDOMAIN }),
  serviceAccountName: str(),
  automountServiceAccountToken: bool,
  priorityClassName: str(),
  enableServiceLinks: bool,
}, ["containers"]);

const deployment = obj({
  apiVersion: str({ enum: ["apps/v1"] }),
  kind: str({ enum: ["Deployment"] }),
  metadata,
  spec: obj({
    replicas: int(0),
    selector: labelSelector,
    template: obj({ metadata: templateMetadata, spec: podSpec }, ["spec"]),
    strategy: obj({
      type: str({ enum: ["Recreate", "RollingUpdate"] }),
      rollingUpdate: obj({ maxSurge: intOrStr, maxUnavailable: intOrStr }),
    }),
    minReadySeconds: int(0),
    revisionHistoryLimit: int(0),
    progressDeadlineSeconds: int(1),
  }, ["selector", "template"]),
}, ["apiVersion", "kind", "metadata", "spec"]);

const service = obj({
  apiVersion: str({ enum: ["v1"] }),
  kind: str({ enum: ["Service"] }),
  metadata,
  spec: obj({
    type: str({ enum: ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] }),
    selector: map(str({ pattern: LABEL_VALUE }), LABEL_KEY),
    ports: arr(
      obj({
        name: str({ pattern: DNS_LABEL }),
        port: int(1, 65535),
        targetPort: intOrStr,
        protocol: str({ enum: ["TCP", "UDP", "SCTP"] }),
        appProtocol: str(),
        nodePort: int(1, 65535),
      }, ["port"]),
      1,
    ),
    sessionAffinity: str({ enum: ["None", "ClientIP"] }),
    clusterIP: str(),
  }),
}, ["apiVersion", "kind", "metadata", "spec"]);

const pdb = obj({
  apiVersion: str({ enum: ["policy/v1"] }),
  kind: str({ enum: ["PodDisruptionBudget"] }),
  metadata,
  spec: obj(
    {
      selector: labelSelector,
      minAvailable: intOrStr,
      maxUnavailable: intOrStr,
      unhealthyPodEvictionPolicy: str({ enum: ["IfHealthyBudget", "AlwaysAllow"] }),
    },
    ["selector"],
    ["minAvailable", "maxUnavailable"],
  ),
}, ["apiVersion", "kind", "metadata", "spec"]);

const metricTarget = obj({
  type: str({ enum: ["Utilization", "Value", "AverageValue"] }),
  value: quantity,
  averageValue: quantity,
  averageUtilization: int(1),
}, ["type"]);
const metricIdentifier = obj({ name: str(), selector: labelSelector }, ["name"]);
const scalingRules = obj({
  stabilizationWindowSeconds: int(0, 3600),
  selectPolicy: str({ enum: ["Max", "Min", "Disabled"] }),
  policies: arr(
    obj({ type: str({ enum: ["Pods", "Percent"] }), value: int(1), periodSeconds: int(1, 1800) }, [
      "type",
      "value",
      "periodSeconds",
    ]),
  ),
});
const crossVersionRef = obj({ apiVersion: str(), kind: str(), name: str() }, ["kind", "name"]);
const hpa = obj({
  apiVersion: str({ enum: ["autoscaling/v2"] }),
  kind: str({ enum: ["HorizontalPodAutoscaler"] }),
  metadata,
  spec: obj({
    scaleTargetRef: crossVersionRef,
    minReplicas: int(1),
    maxReplicas: int(1),
    metrics: arr(obj({
      type: str({ enum: ["Pods", "Object", "External", "Resource", "ContainerResource"] }),
      pods: obj({ metric: metricIdentifier, target: metricTarget }, ["metric", "target"]),
      object: obj({ describedObject: crossVersionRef, metric: metricIdentifier, target: metricTarget }, [
        "describedObject",
        "metric",
        "target",
      ]),
      external: obj({ metric: metricIdentifier, target: metricTarget }, ["metric", "target"]),
      resource: obj({ name: str(), target: metricTarget }, ["name", "target"]),
    }, ["type"])),
    behavior: obj({ scaleUp: scalingRules, scaleDown: scalingRules }),
  }, ["scaleTargetRef", "maxReplicas"]),
}, ["apiVersion", "kind", "metadata", "spec"]);

const pvc = obj({
  apiVersion: str({ enum: ["v1"] }),
  kind: str({ enum: ["PersistentVolumeClaim"] }),
  metadata,
  spec: obj({
    accessModes: arr(
      str({ enum: ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"] }),
      1,
    ),
    resources: obj({ requests: map(quantity), limits: map(quantity) }, ["requests"]),
    storageClassName: str(),
    volumeMode: str({ enum: ["Filesystem", "Block"] }),
  }, ["accessModes", "resources"]),
}, ["apiVersion", "kind", "metadata", "spec"]);

const podMonitor = obj({
  apiVersion: str({ enum: ["monitoring.coreos.com/v1"] }),
  kind: str({ enum: ["PodMonitor"] }),
  metadata,
  spec: obj({
    selector: labelSelector,
    namespaceSelector: obj({ any: bool, matchNames: arr(str()) }),
    podMetricsEndpoints: arr(
      obj({ port: str(), path: str({ pattern: /^\// }), interval: str({ pattern: /^\d+(ms|s|m|h)$/ }) }),
      1,
    ),
  }, ["selector", "podMetricsEndpoints"]),
}, ["apiVersion", "kind", "metadata", "spec"]);

const inferencePool = obj({
  apiVersion: str({ enum: ["inference.networking.k8s.io/v1"] }),
  kind: str({ enum: ["InferencePool"] }),
  metadata,
  spec: obj({
    selector: obj({ matchLabels: labels }, ["matchLabels"]),
    targetPorts: arr(obj({ number: int(1, 65535) }, ["number"]), 1, 1),
    endpointPickerRef: obj({
      group: str(),
      kind: str(),
      name: str(),
      port: obj({ number: int(1, 65535) }, ["number"]),
      failureMode: str({ enum: ["FailOpen", "FailClose"] }),
    }, ["name"]),
  }, ["selector", "targetPorts", "endpointPickerRef"]),
}, ["apiVersion", "kind", "metadata", "spec"]);

const httpRoute = obj({
  apiVersion: str({ enum: ["gateway.networking.k8s.io/v1"] }),
  kind: str({ enum: ["HTTPRoute"] }),
  metadata,
  spec: obj({
    parentRefs: arr(
      obj({ group: str(), kind: str(), name: str(), namespace: str(), sectionName: str() }, ["name"]),
    ),
    hostnames: arr(str()),
    rules: arr(obj({
      matches: arr(obj({
        path: obj({ type: str({ enum: ["Exact", "PathPrefix", "RegularExpression"] }), value: str() }),
      })),
      backendRefs: arr(obj({
        group: str(),
        kind: str(),
        name: str(),
        namespace: str(),
        port: int(1, 65535),
        weight: int(0),
      }, ["name"])),
      timeouts: obj({ request: str(), backendRequest: str() }),
    })),
  }),
}, ["apiVersion", "kind", "metadata", "spec"]);

const kustomization = obj({
  apiVersion: str({ enum: ["kustomize.config.k8s.io/v1beta1"] }),
  kind: str({ enum: ["Kustomization"] }),
  namespace: str({ pattern: DNS_LABEL }),
  resources: arr(str()),
  labels: arr(obj({ pairs: labels, includeSelectors: bool, includeTemplates: bool }, ["pairs"])),
  images: arr(obj({ name: str(), newName: str(), newTag: str(), digest: str() }, ["name"])),
}, ["apiVersion", "kind"]);

/** Schemas by `apiVersion kind`. */
export const SCHEMAS: Record<string, Schema> = {
  "apps/v1 Deployment": deployment,
  "v1 Service": service,
  "v1 PersistentVolumeClaim": pvc,
  "policy/v1 PodDisruptionBudget": pdb,
  "autoscaling/v2 HorizontalPodAutoscaler": hpa,
  "monitoring.coreos.com/v1 PodMonitor": podMonitor,
  "inference.networking.k8s.io/v1 InferencePool": inferencePool,
  "gateway.networking.k8s.io/v1 HTTPRoute": httpRoute,
  "kustomize.config.k8s.io/v1beta1 Kustomization": kustomization,
};

function typeName(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "array" : typeof v;
}

/** Errors in `value` against `schema`, each as `path: what is wrong, what was expected`. */
export function validate(value: unknown, schema: Schema, path = ""): string[] {
  const at = path || "(root)";
  switch (schema.t) {
    case "any":
      return [];
    case "str": {
      if (typeof value !== "string") return [`${at}: expected a string, got ${typeName(value)}`];
      if (schema.enum && !schema.enum.includes(value)) {
        return [`${at}: "${value}" is not one of ${schema.enum.map((e) => `"${e}"`).join(", ")}`];
      }
      if (schema.pattern && !schema.pattern.test(value)) {
        return [`${at}: "${value}" is not ${schema.what ?? `matching ${schema.pattern}`}`];
      }
      return [];
    }
    case "int": {
      if (typeof value !== "number" || !Number.isInteger(value)) {
        return [`${at}: expected an integer, got ${typeName(value)} ${JSON.stringify(value)}`];
      }
      if (schema.min !== undefined && value < schema.min) return [`${at}: ${value} is below ${schema.min}`];
      if (schema.max !== undefined && value > schema.max) return [`${at}: ${value} is above ${schema.max}`];
      return [];
    }
    case "bool":
      return typeof value === "boolean" ? [] : [`${at}: expected true or false, got ${typeName(value)}`];
    case "quantity":
      if (typeof value === "number" && Number.isFinite(value)) return [];
      if (typeof value === "string" && QUANTITY.test(value)) return [];
      return [`${at}: ${JSON.stringify(value)} is not a quantity (like 2, "500m", "16Gi")`];
    case "intOrStr":
      if (
        (typeof value === "number" && Number.isInteger(value)) || (typeof value === "string" && value !== "")
      ) {
        return [];
      }
      return [`${at}: expected an integer or a non-empty string, got ${JSON.stringify(value)}`];
    case "arr": {
      if (!Array.isArray(value)) return [`${at}: expected an array, got ${typeName(value)}`];
      const errs: string[] = [];
      if (schema.min !== undefined && value.length < schema.min) {
        errs.push(`${at}: expected at least ${schema.min} item(s), got ${value.length}`);
      }
      if (schema.max !== undefined && value.length > schema.max) {
        errs.push(`${at}: expected at most ${schema.max} item(s), got ${value.length}`);
      }
      value.forEach((v, i) => errs.push(...validate(v, schema.of, `${path}[${i}]`)));
      return errs;
    }
    case "map": {
      if (typeof value !== "object" || value === null || Array.isArray(value)) {
        return [`${at}: expected a mapping, got ${typeName(value)}`];
      }
      const errs: string[] = [];
      for (const [k, v] of Object.entries(value)) {
        if (schema.keys && !schema.keys.test(k)) errs.push(`${at}: key "${k}" is not a valid label key`);
        errs.push(...validate(v, schema.of, `${path}.${k}`));
      }
      return errs;
    }
    case "obj": {
      if (typeof value !== "object" || value === null || Array.isArray(value)) {
        return [`${at}: expected an object, got ${typeName(value)}`];
      }
      const errs: string[] = [];
      const rec = value as Record<string, unknown>;
      for (const req of schema.required ?? []) {
        if (rec[req] === undefined || rec[req] === null) {
          errs.push(`${path}.${req}: required field is missing`);
        }
      }
      if (schema.oneOf) {
        const set = schema.oneOf.filter((k) => rec[k] !== undefined);
        if (set.length > 1) {
          errs.push(`${at}: set only one of ${schema.oneOf.join(", ")} (found ${set.join(", ")})`);
        }
      }
      for (const [k, v] of Object.entries(rec)) {
        const sub = schema.props[k];
        if (!sub) {
          errs.push(`${path}.${k}: unknown field (known: ${Object.keys(schema.props).join(", ")})`);
        } else {
          errs.push(...validate(v, sub, `${path}.${k}`));
        }
      }
      return errs;
    }
  }
}

/** Validates one manifest document by its apiVersion and kind. */
export function validateManifest(doc: unknown): string[] {
  if (typeof doc !== "object" || doc === null) return [`(root): expected an object, got ${typeName(doc)}`];
  const { apiVersion, kind } = doc as { apiVersion?: unknown; kind?: unknown };
  const key = `${apiVersion} ${kind}`;
  const schema = SCHEMAS[key];
  if (!schema) {
    return [
      `(root): no schema for apiVersion "${apiVersion}" kind "${kind}" (known: ${
        Object.keys(SCHEMAS).join("; ")
      })`,
    ];
  }
  return validate(doc, schema);
}
