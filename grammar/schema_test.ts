import assert from "node:assert/strict";
import { z } from "zod";
import { checkSchema, SchemaError } from "./schema.ts";

const ACCEPTED: [string, unknown][] = [
  ["an empty schema (any value)", {}],
  ["true", true],
  ["a typed object", {
    type: "object",
    properties: { a: { type: "string", maxLength: 3 }, b: { type: "integer", minimum: 0, maximum: 9 } },
    required: ["a"],
    additionalProperties: false,
  }],
  ["annotations everywhere", {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    title: "T",
    description: "D",
    type: "string",
    default: "x",
    examples: ["y"],
  }],
  ["a recursive tree with a base case", {
    $defs: {
      node: { type: "object", properties: { kids: { type: "array", items: { $ref: "#/$defs/node" } } } },
    },
    $ref: "#/$defs/node",
  }],
  ["recursion through the root, optional", { type: "object", properties: { next: { $ref: "#" } } }],
  ["recursion broken by anyOf", {
    definitions: {
      l: {
        anyOf: [{ type: "null" }, {
          type: "object",
          properties: { t: { $ref: "#/definitions/l" } },
          required: ["t"],
        }],
      },
    },
    $ref: "#/definitions/l",
  }],
  ["const and enum with a matching type", {
    type: "object",
    properties: { k: { type: "string", enum: ["a", "b"] }, c: { type: "integer", const: 3 } },
  }],
  ["a pattern with a format annotation", { type: "string", pattern: "^[a-z]+@[a-z]+$", format: "email" }],
  ["tuples", {
    type: "array",
    prefixItems: [{ type: "string" }, { type: "number" }],
    items: false,
    minItems: 2,
  }],
  ["type arrays", { type: ["string", "null"], maxLength: 4 }],
  ["a single allOf", { allOf: [{ type: "boolean" }] }],
  ["a key with a slash, referenced", { $defs: { "a/b": { type: "null" } }, $ref: "#/$defs/a~1b" }],
  [
    "every zod 4 shape the clients send",
    z.toJSONSchema(z.object({
      name: z.string().max(10),
      age: z.number().int().min(0).max(120),
      kind: z.enum(["a", "b"]),
      maybe: z.string().nullable(),
      opt: z.boolean().optional(),
      lit: z.literal("x"),
      union: z.union([z.string(), z.number()]),
      tagged: z.discriminatedUnion("t", [
        z.object({ t: z.literal("p"), x: z.number() }),
        z.object({ t: z.literal("q") }),
      ]),
      rec: z.record(z.string(), z.number()),
      arr: z.array(z.string()).min(1).max(3),
      tup: z.tuple([z.string(), z.number()]),
      email: z.email(),
      when: z.iso.datetime(),
    })),
  ],
];

for (const [name, schema] of ACCEPTED) {
  Deno.test(`checkSchema() accepts ${name}`, () => {
    checkSchema(schema);
  });
}

/** [case, schema, JSON pointer of the problem, message fragment] */
const REJECTED: [string, unknown, string, RegExp][] = [
  ["a non-schema", 3, "", /expected a schema object or boolean, got number/],
  ["not", { not: { type: "string" } }, "/not", /keyword "not" is not supported: negation/],
  ["if/then", { if: { type: "string" }, then: { maxLength: 3 } }, "/if", /conditional schemas/],
  ["uniqueItems", { type: "array", uniqueItems: true }, "/uniqueItems", /uniqueness/],
  ["multipleOf", { type: "number", multipleOf: 2 }, "/multipleOf", /multipleOf is not supported/],
  ["a keyword of another type", { type: "string", minimum: 3 }, "/minimum", /applies to type "integer"/],
  ["a typeless bound", { maximum: 3 }, "/maximum", /add "type"/],
  [
    "an unknown keyword",
    { type: "string", frobnicate: 1 },
    "/frobnicate",
    /keyword "frobnicate" is not supported/,
  ],
  ["an unknown type", { type: "text" }, "/type", /unknown type "text"/],
  [
    "siblings of $ref",
    { $defs: { a: { type: "string" } }, $ref: "#/$defs/a", maxLength: 2 },
    "/maxLength",
    /beside "\$ref"/,
  ],
  ["siblings of anyOf", { type: "object", anyOf: [{ required: [] }] }, "/type", /beside "anyOf"/],
  ["an empty anyOf", { anyOf: [] }, "/anyOf", /non-empty array/],
  ["allOf of two", { allOf: [{ type: "string" }, { maxLength: 2 }] }, "/allOf", /exactly one schema/],
  ["a remote $ref", { $ref: "https://example.com/s.json" }, "/$ref", /only local references/],
  ["a dangling $ref", { $ref: "#/$defs/missing" }, "/$ref", /does not resolve/],
  [
    "a $ref at a non-schema",
    { $defs: { a: { type: "string" } }, $ref: "#/$defs" },
    "/$ref",
    /does not point at a schema/,
  ],
  [
    "infinite required recursion",
    {
      $defs: { n: { type: "object", properties: { c: { $ref: "#/$defs/n" } }, required: ["c"] } },
      $ref: "#/$defs/n",
    },
    "/$defs/n",
    /no finite instance/,
  ],
  [
    "infinite array recursion",
    { type: "array", items: { $ref: "#" }, minItems: 1 },
    "",
    /no finite instance/,
  ],
  [
    "a required property not listed",
    { type: "object", properties: { a: {} }, required: ["b"] },
    "/required/0",
    /"b" is not listed/,
  ],
  [
    "minLength above maxLength",
    { type: "string", minLength: 5, maxLength: 2 },
    "/minLength",
    /greater than maxLength 2/,
  ],
  ["a negative maxItems", { type: "array", maxItems: -1 }, "/maxItems", /non-negative integer/],
  ["an empty integer range", { type: "integer", minimum: 1.2, maximum: 1.8 }, "", /no integer lies between/],
  [
    "an unsupported format",
    { type: "string", format: "color" },
    "/format",
    /format "color" is not supported/,
  ],
  [
    "a length beside a pattern",
    { type: "string", pattern: "^a+$", maxLength: 3 },
    "/maxLength",
    /beside "pattern"/,
  ],
  ["a broken pattern", { type: "string", pattern: "(" }, "/pattern", /invalid regular expression/],
  ["lookahead", { type: "string", pattern: "^(?=a)a$" }, "/pattern", /lookaround/],
  ["a backreference", { type: "string", pattern: "^(a)\\1$" }, "/pattern", /backreferences/],
  ["a const of the wrong type", { type: "string", const: 3 }, "/const", /not of type string/],
  [
    "an enum value of the wrong type",
    { type: "integer", enum: [1, "2"] },
    "/enum/1",
    /"2" is not of type integer/,
  ],
  [
    "deep nesting",
    (() => {
      let s: unknown = { type: "string" };
      for (let i = 0; i < 60; i++) s = { type: "array", items: s };
      return s;
    })(),
    "/items".repeat(49),
    /nest deeper than 48/,
  ],
];

for (const [name, schema, pointer, message] of REJECTED) {
  Deno.test(`checkSchema() refuses ${name}`, () => {
    assert.throws(() => checkSchema(schema), (e) => {
      assert.ok(e instanceof SchemaError, String(e));
      assert.equal(e.pointer, pointer);
      assert.match(e.message, message);
      return true;
    });
  });
}

Deno.test("checkSchema() caps the number of subschemas", () => {
  const props = Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`p${i}`, { type: "string" }]));
  checkSchema({ type: "object", properties: props }, { maxDepth: 10, maxNodes: 51 });
  assert.throws(
    () => checkSchema({ type: "object", properties: props }, { maxDepth: 10, maxNodes: 50 }),
    /more than 50 subschemas/,
  );
});
