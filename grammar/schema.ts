// The JSON Schema subset Trellis enforces, checked before the grammar engine sees a schema: every keyword
// must be one xgrammar turns into grammar rules exactly (it logs a warning and ignores the others, so an
// output could parse but fail the schema), every $ref must resolve, and the schema must have a finite
// instance (a required property that recurses forever would let generation run to max_tokens). The
// subset follows xgrammar's JSON schema converter (cpp/json_schema_converter.cc, v0.1.27): which keyword
// of a node it looks at first ($ref, const, enum, anyOf/oneOf, allOf, type), and what each type reads.

/** A schema problem: `pointer` is the JSON pointer of the offending node inside the schema. */
export class SchemaError extends Error {
  readonly pointer: string;

  constructor(pointer: string, message: string) {
    super(message);
    this.name = "SchemaError";
    this.pointer = pointer;
  }
}

export interface SchemaLimits {
  /** Deepest nesting of subschemas. */
  maxDepth: number;
  /** Most subschemas in one schema. */
  maxNodes: number;
}

export const DEFAULT_SCHEMA_LIMITS: SchemaLimits = { maxDepth: 48, maxNodes: 10_000 };

/** Keywords that never constrain an instance (and containers of definitions). */
const ANNOTATIONS = new Set([
  "$schema",
  "$id",
  "$comment",
  "$defs",
  "definitions",
  "title",
  "description",
  "default",
  "examples",
  "deprecated",
  "readOnly",
  "writeOnly",
]);

const TYPES = ["string", "integer", "number", "boolean", "null", "array", "object"] as const;
type TypeName = typeof TYPES[number];

/** What each type reads (xgrammar's Visit<Type>). */
const TYPE_KEYWORDS: Record<TypeName, readonly string[]> = {
  string: ["minLength", "maxLength", "pattern", "format"],
  integer: ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"],
  number: ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"],
  boolean: [],
  null: [],
  array: ["items", "prefixItems", "minItems", "maxItems", "unevaluatedItems"],
  object: [
    "properties",
    "required",
    "additionalProperties",
    "unevaluatedProperties",
    "patternProperties",
    "propertyNames",
    "minProperties",
    "maxProperties",
  ],
};

/** String formats xgrammar turns into rules. */
export const SUPPORTED_FORMATS = new Set([
  "email",
  "date",
  "time",
  "date-time",
  "duration",
  "ipv4",
  "ipv6",
  "hostname",
  "uuid",
  "uri",
  "uri-reference",
  "uri-template",
  "json-pointer",
  "relative-json-pointer",
]);

/** Why a keyword is refused, for the ones clients send most. */
const REFUSED: Record<string, string> = {
  not: "negation cannot be expressed as a grammar",
  if: "conditional schemas are not supported",
  then: "conditional schemas are not supported",
  else: "conditional schemas are not supported",
  dependentRequired: "dependencies between properties are not supported",
  dependentSchemas: "dependencies between properties are not supported",
  dependencies: "dependencies between properties are not supported",
  uniqueItems: "uniqueness cannot be expressed as a grammar",
  contains: "contains is not supported",
  minContains: "contains is not supported",
  maxContains: "contains is not supported",
  multipleOf: "multipleOf is not supported",
  additionalItems: 'use "items" with "prefixItems" instead',
  $dynamicRef: "dynamic references are not supported",
  $recursiveRef: "dynamic references are not supported",
};

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

function isObject(v: unknown): v is JsonObject {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function escapePointer(key: string): string {
  return key.replaceAll("~", "~0").replaceAll("/", "~1");
}

function unescapePointer(part: string): string {
  return part.replaceAll("~1", "/").replaceAll("~0", "~");
}

function describeType(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "an array" : typeof v === "object" ? "an object" : typeof v;
}

/** The node a local reference ("#" or "#/a/b") points at, or undefined. */
function resolvePointer(root: Json, ref: string): Json | undefined {
  if (ref === "#") return root;
  let node: Json | undefined = root;
  for (const raw of ref.slice(2).split("/")) {
    let part: string;
    try {
      part = decodeURIComponent(unescapePointer(raw));
    } catch {
      return undefined;
    }
    if (isObject(node) && Object.hasOwn(node, part)) node = node[part];
    else if (Array.isArray(node) && /^\d+$/.test(part) && Number(part) < node.length) {
      node = node[Number(part)];
    } else return undefined;
  }
  return node;
}

function jsonType(v: Json): TypeName {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v as "string" | "boolean" | "object";
}

/** The finite-instance check: each node's kind and the nodes it needs, solved as a least fixed point. */
type Need =
  | { kind: "always" }
  | { kind: "never" }
  | { kind: "all"; of: string[] }
  | { kind: "any"; of: string[] };

class Checker {
  readonly #root: Json;
  readonly #limits: SchemaLimits;
  #nodes = 0;
  /** Pointer -> what that node needs to have an instance (refs point at other entries). */
  readonly needs = new Map<string, Need>();
  /** Every $ref met: where it is and the pointer of its target. */
  readonly refs: { at: string; target: string }[] = [];

  constructor(root: Json, limits: SchemaLimits) {
    this.#root = root;
    this.#limits = limits;
  }

  /** Checks the node at `at` (a JSON pointer) and records what it needs; returns its pointer. */
  node(schema: Json, at: string, depth: number): string {
    if (++this.#nodes > this.#limits.maxNodes) {
      throw new SchemaError(at, `the schema has more than ${this.#limits.maxNodes} subschemas`);
    }
    if (depth > this.#limits.maxDepth) {
      throw new SchemaError(at, `subschemas nest deeper than ${this.#limits.maxDepth} levels`);
    }
    if (schema === true) return this.#need(at, { kind: "always" });
    if (schema === false) return this.#need(at, { kind: "never" });
    if (!isObject(schema)) {
      throw new SchemaError(at, `expected a schema object or boolean, got ${describeType(schema)}`);
    }
    for (const key of ["$defs", "definitions"]) {
      const defs = schema[key];
      if (defs === undefined) continue;
      if (!isObject(defs)) throw new SchemaError(`${at}/${key}`, `expected an object of schemas`);
      for (const [name, def] of Object.entries(defs)) {
        this.node(def, `${at}/${key}/${escapePointer(name)}`, depth + 1);
      }
    }
    for (const key of Object.keys(schema)) {
      if (key in REFUSED) {
        throw new SchemaError(`${at}/${key}`, `keyword "${key}" is not supported: ${REFUSED[key]}`);
      }
    }
    // xgrammar reads the first of these a node has and ignores the rest: refuse siblings it would drop.
    if ("$ref" in schema) return this.#ref(schema, at);
    if ("const" in schema) return this.#literal(schema, at, "const", [schema.const]);
    if ("enum" in schema) {
      const values = schema.enum;
      if (!Array.isArray(values) || values.length === 0) {
        throw new SchemaError(`${at}/enum`, "expected a non-empty array");
      }
      return this.#literal(schema, at, "enum", values);
    }
    if ("anyOf" in schema || "oneOf" in schema) return this.#anyOf(schema, at, depth);
    if ("allOf" in schema) {
      const all = schema.allOf;
      this.#only(schema, at, ["allOf"], '"allOf"');
      if (!Array.isArray(all) || all.length !== 1) {
        throw new SchemaError(
          `${at}/allOf`,
          "expected an array of exactly one schema: intersections of several schemas are not enforced exactly",
        );
      }
      return this.#need(at, { kind: "all", of: [this.node(all[0], `${at}/allOf/0`, depth + 1)] });
    }
    return this.#typed(schema, at, depth);
  }

  #need(at: string, need: Need): string {
    this.needs.set(at, need);
    return at;
  }

  /** Refuses keywords of `schema` outside annotations and `allowed`. */
  #only(schema: JsonObject, at: string, allowed: readonly string[], what: string): void {
    for (const key of Object.keys(schema)) {
      if (ANNOTATIONS.has(key) || allowed.includes(key)) continue;
      throw new SchemaError(`${at}/${key}`, `keyword "${key}" is not supported beside ${what}`);
    }
  }

  #ref(schema: JsonObject, at: string): string {
    this.#only(schema, at, ["$ref"], '"$ref"');
    const ref = schema.$ref;
    if (typeof ref !== "string") throw new SchemaError(`${at}/$ref`, "expected a string");
    if (ref !== "#" && !ref.startsWith("#/")) {
      throw new SchemaError(
        `${at}/$ref`,
        `only local references ("#" or "#/...") are supported, got "${ref}"`,
      );
    }
    const target = resolvePointer(this.#root, ref);
    if (target === undefined) throw new SchemaError(`${at}/$ref`, `reference "${ref}" does not resolve`);
    // The target is checked where it sits (as a definition or as part of the tree); the need points there.
    const pointer = ref === "#"
      ? ""
      : ref.slice(1).split("/").map((p) => escapePointer(decodeURIComponent(unescapePointer(p)))).join("/");
    this.refs.push({ at, target: pointer });
    return this.#need(at, { kind: "all", of: [pointer] });
  }

  #literal(schema: JsonObject, at: string, key: "const" | "enum", values: Json[]): string {
    this.#only(schema, at, [key, "type"], `"${key}"`);
    const type = schema.type;
    if (type !== undefined) {
      const types = this.#types(type, `${at}/type`);
      values.forEach((v, i) => {
        const t = jsonType(v);
        if (!types.includes(t) && !(t === "integer" && types.includes("number"))) {
          throw new SchemaError(
            key === "const" ? `${at}/const` : `${at}/enum/${i}`,
            `value ${JSON.stringify(v)} is not of type ${types.join(" or ")}`,
          );
        }
      });
    }
    return this.#need(at, { kind: "always" });
  }

  #anyOf(schema: JsonObject, at: string, depth: number): string {
    if ("anyOf" in schema && "oneOf" in schema) {
      throw new SchemaError(`${at}/oneOf`, 'keyword "oneOf" is not supported beside "anyOf"');
    }
    const key = "anyOf" in schema ? "anyOf" : "oneOf";
    this.#only(schema, at, [key], `"${key}"`);
    const branches = schema[key];
    if (!Array.isArray(branches) || branches.length === 0) {
      throw new SchemaError(`${at}/${key}`, "expected a non-empty array of schemas");
    }
    return this.#need(at, {
      kind: "any",
      of: branches.map((b, i) => this.node(b, `${at}/${key}/${i}`, depth + 1)),
    });
  }

  #types(type: Json, at: string): TypeName[] {
    const list = Array.isArray(type) ? type : [type];
    if (list.length === 0) throw new SchemaError(at, "expected at least one type");
    return list.map((t, i) => {
      if (typeof t !== "string" || !(TYPES as readonly string[]).includes(t)) {
        throw new SchemaError(
          Array.isArray(type) ? `${at}/${i}` : at,
          `unknown type ${JSON.stringify(t)}: expected one of ${TYPES.join(", ")}`,
        );
      }
      return t as TypeName;
    });
  }

  /** A node read by its type (or, without one, by the object or array keywords it has, else any value). */
  #typed(schema: JsonObject, at: string, depth: number): string {
    let types: TypeName[];
    if (schema.type !== undefined) types = this.#types(schema.type, `${at}/type`);
    else if (["properties", "additionalProperties", "unevaluatedProperties"].some((k) => k in schema)) {
      types = ["object"];
    } else if (["items", "prefixItems", "unevaluatedItems"].some((k) => k in schema)) types = ["array"];
    else types = [];
    const allowed = ["type", ...types.flatMap((t) => TYPE_KEYWORDS[t])];
    for (const key of Object.keys(schema)) {
      if (ANNOTATIONS.has(key) || allowed.includes(key)) continue;
      const owner = TYPES.find((t) => TYPE_KEYWORDS[t].includes(key));
      throw new SchemaError(
        `${at}/${key}`,
        owner
          ? `keyword "${key}" applies to type "${owner}", which this schema does not have: add "type": "${owner}"`
          : `keyword "${key}" is not supported`,
      );
    }
    const needs: string[] = [];
    for (const t of types) needs.push(this.#typeNeed(schema, at, t, depth, types.length > 1));
    if (types.length === 0) return this.#need(at, { kind: "always" });
    return types.length === 1
      ? this.#need(at, this.needs.get(needs[0])!)
      : this.#need(at, { kind: "any", of: needs });
  }

  /** Checks one type's keywords; returns the pointer of a need entry for that type. */
  #typeNeed(schema: JsonObject, at: string, type: TypeName, depth: number, several: boolean): string {
    const id = several ? `${at}#${type}` : `${at}#`;
    switch (type) {
      case "string":
        this.#string(schema, at);
        return this.#need(id, { kind: "always" });
      case "integer":
      case "number":
        this.#range(schema, at, type);
        return this.#need(id, { kind: "always" });
      case "boolean":
      case "null":
        return this.#need(id, { kind: "always" });
      case "array":
        return this.#need(id, this.#array(schema, at, depth));
      case "object":
        return this.#need(id, this.#object(schema, at, depth));
    }
  }

  #count(schema: JsonObject, at: string, key: string): number | undefined {
    const v = schema[key];
    if (v === undefined) return undefined;
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
      throw new SchemaError(`${at}/${key}`, `expected a non-negative integer, got ${JSON.stringify(v)}`);
    }
    return v;
  }

  #bounds(schema: JsonObject, at: string, min: string, max: string): void {
    const lo = this.#count(schema, at, min);
    const hi = this.#count(schema, at, max);
    if (lo !== undefined && hi !== undefined && lo > hi) {
      throw new SchemaError(`${at}/${min}`, `${min} ${lo} is greater than ${max} ${hi}`);
    }
  }

  #string(schema: JsonObject, at: string): void {
    this.#bounds(schema, at, "minLength", "maxLength");
    const format = schema.format;
    if (format !== undefined) {
      if (typeof format !== "string" || !SUPPORTED_FORMATS.has(format)) {
        throw new SchemaError(
          `${at}/format`,
          `format ${JSON.stringify(format)} is not supported: expected one of ${
            [...SUPPORTED_FORMATS].join(", ")
          }`,
        );
      }
    }
    const pattern = schema.pattern;
    if (pattern === undefined) return;
    if (typeof pattern !== "string") throw new SchemaError(`${at}/pattern`, "expected a string");
    // Beside a pattern xgrammar enforces only the pattern; a format stays an annotation then (zod writes
    // both, its pattern being the format's definition), but length bounds would be dropped.
    for (const other of ["minLength", "maxLength"]) {
      if (other in schema) {
        throw new SchemaError(
          `${at}/${other}`,
          `keyword "${other}" is not supported beside "pattern": fold it into the pattern`,
        );
      }
    }
    checkPattern(pattern, `${at}/pattern`);
  }

  #range(schema: JsonObject, at: string, type: "integer" | "number"): void {
    for (const key of TYPE_KEYWORDS[type]) {
      const v = schema[key];
      if (v !== undefined && (typeof v !== "number" || !Number.isFinite(v))) {
        throw new SchemaError(`${at}/${key}`, `expected a number, got ${JSON.stringify(v)}`);
      }
    }
    const lo = (schema.minimum ?? schema.exclusiveMinimum) as number | undefined;
    const hi = (schema.maximum ?? schema.exclusiveMaximum) as number | undefined;
    if (lo !== undefined && hi !== undefined && lo > hi) {
      throw new SchemaError(at, `the range is empty: the lower bound ${lo} is above the upper bound ${hi}`);
    }
    if (type === "integer" && lo !== undefined && hi !== undefined && Math.ceil(lo) > Math.floor(hi)) {
      throw new SchemaError(at, `no integer lies between ${lo} and ${hi}`);
    }
  }

  #array(schema: JsonObject, at: string, depth: number): Need {
    this.#bounds(schema, at, "minItems", "maxItems");
    const prefix: string[] = [];
    if (schema.prefixItems !== undefined) {
      if (!Array.isArray(schema.prefixItems)) {
        throw new SchemaError(`${at}/prefixItems`, "expected an array of schemas");
      }
      schema.prefixItems.forEach((s, i) => prefix.push(this.node(s, `${at}/prefixItems/${i}`, depth + 1)));
    }
    const rest = schema.items ?? schema.unevaluatedItems;
    const restAt = schema.items !== undefined ? `${at}/items` : `${at}/unevaluatedItems`;
    const restNeed = rest === undefined ? null : this.node(rest, restAt, depth + 1);
    // The first minItems positions must have instances: prefix schemas, then the rest's.
    const minItems = this.#count(schema, at, "minItems") ?? 0;
    const of: string[] = [];
    for (let i = 0; i < minItems && i < prefix.length; i++) of.push(prefix[i]);
    if (minItems > prefix.length && restNeed !== null) of.push(restNeed);
    if (minItems > prefix.length && rest === false) {
      throw new SchemaError(at, `minItems ${minItems} needs more items than the schema allows`);
    }
    return { kind: "all", of };
  }

  #object(schema: JsonObject, at: string, depth: number): Need {
    this.#bounds(schema, at, "minProperties", "maxProperties");
    const props = schema.properties ?? {};
    if (!isObject(props)) throw new SchemaError(`${at}/properties`, "expected an object of schemas");
    const propNeed = new Map<string, string>();
    for (const [name, s] of Object.entries(props)) {
      propNeed.set(name, this.node(s, `${at}/properties/${escapePointer(name)}`, depth + 1));
    }
    for (const key of ["additionalProperties", "unevaluatedProperties", "propertyNames"]) {
      if (schema[key] !== undefined) this.node(schema[key], `${at}/${key}`, depth + 1);
    }
    if (schema.patternProperties !== undefined) {
      if (!isObject(schema.patternProperties)) {
        throw new SchemaError(`${at}/patternProperties`, "expected an object of schemas");
      }
      for (const [pattern, s] of Object.entries(schema.patternProperties)) {
        const pat = `${at}/patternProperties/${escapePointer(pattern)}`;
        checkPattern(pattern, pat);
        this.node(s, pat, depth + 1);
      }
    }
    const required = schema.required ?? [];
    if (!Array.isArray(required) || !required.every((r) => typeof r === "string")) {
      throw new SchemaError(`${at}/required`, "expected an array of property names");
    }
    const of: string[] = [];
    required.forEach((name, i) => {
      const need = propNeed.get(name as string);
      // xgrammar generates only listed properties for `required` (it drops unlisted names silently).
      if (need === undefined) {
        throw new SchemaError(
          `${at}/required/${i}`,
          `required property "${name}" is not listed in "properties"`,
        );
      }
      of.push(need);
    });
    return { kind: "all", of };
  }
}

/** Refuses regular expressions xgrammar's converter rejects (lookaround, backreferences, \p classes). */
function checkPattern(pattern: string, at: string): void {
  try {
    new RegExp(pattern, "u");
  } catch (e) {
    throw new SchemaError(
      at,
      `invalid regular expression ${JSON.stringify(pattern)}: ${(e as Error).message}`,
    );
  }
  const unsupported: [RegExp, string][] = [
    [/\(\?<?[=!]/, "lookaround assertions"],
    [/\\[1-9]|\\k</, "backreferences"],
    [/\\[pP]\{/, "Unicode property classes"],
  ];
  for (const [re, what] of unsupported) {
    if (re.test(pattern)) {
      throw new SchemaError(at, `${what} are not supported in patterns: ${JSON.stringify(pattern)}`);
    }
  }
}

/** Whether each recorded node has a finite instance: the least fixed point of the needs. */
function productive(needs: Map<string, Need>): Map<string, boolean> {
  const ok = new Map<string, boolean>([...needs.keys()].map((k) => [k, false]));
  for (let changed = true; changed;) {
    changed = false;
    for (const [at, need] of needs) {
      if (ok.get(at)) continue;
      const value = need.kind === "always" ||
        (need.kind === "all" && need.of.every((p) => ok.get(p))) ||
        (need.kind === "any" && need.of.some((p) => ok.get(p)));
      if (value) {
        ok.set(at, true);
        changed = true;
      }
    }
  }
  return ok;
}

/**
 * Checks that `schema` (parsed JSON) uses only what the grammar engine enforces exactly, that its $refs
 * resolve, and that it has a finite instance; throws SchemaError naming the node otherwise.
 */
export function checkSchema(schema: unknown, limits: SchemaLimits = DEFAULT_SCHEMA_LIMITS): void {
  const checker = new Checker(schema as Json, limits);
  checker.node(schema as Json, "", 0);
  for (const ref of checker.refs) {
    if (!checker.needs.has(ref.target)) {
      throw new SchemaError(`${ref.at}/$ref`, `reference "#${ref.target}" does not point at a schema`);
    }
  }
  const ok = productive(checker.needs);
  if (ok.get("")) return;
  // Name a reference target without an instance (where the recursion closes), else the root.
  const where = checker.refs.find((r) => !ok.get(r.target))?.target ?? "";
  throw new SchemaError(
    where,
    "the schema has no finite instance: required properties, items or references recurse forever " +
      "(or a required subschema is false)",
  );
}
