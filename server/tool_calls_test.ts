import assert from "node:assert/strict";
import { jsonValueEnd, parseToolCalls, type ToolCallDelta, ToolCallParser } from "./tool_calls.ts";
import { seededRandom } from "../test/support/mod.ts";

const NAMES = ["get_weather", "now"];

function parser(forced: boolean, parallel = true): ToolCallParser {
  let n = 0;
  return new ToolCallParser({ names: NAMES, forced, parallel, newId: () => `call_${n++}` });
}

/** Feeds `pieces` and finish(); returns released content, the deltas, and the parser. */
function feed(p: ToolCallParser, pieces: string[]) {
  let content = "";
  const deltas: ToolCallDelta[] = [];
  for (const piece of [...pieces.map((t) => p.push(t)), p.finish()]) {
    content += piece.content;
    deltas.push(...piece.calls);
  }
  return { content, deltas };
}

/** Tool calls rebuilt from deltas the way the openai SDK's stream helper does. */
function reassemble(deltas: ToolCallDelta[]) {
  const calls: { id: string; name: string; arguments: string }[] = [];
  for (const d of deltas) {
    if (d.id !== undefined) {
      assert.equal(calls.length, d.index, "a call's first delta comes in index order");
      calls.push({ id: d.id, name: d.name!, arguments: d.arguments });
    } else calls[d.index].arguments += d.arguments;
  }
  return calls;
}

/** `text` cut at random places. */
function chunks(text: string, seed: number): string[] {
  const rnd = seededRandom(seed);
  const out: string[] = [];
  for (let i = 0; i < text.length;) {
    const n = 1 + Math.floor(rnd() * 6);
    out.push(text.slice(i, i + n));
    i += n;
  }
  return out;
}

const FORCED_TEXT = '{"name": "get_weather", "parameters": {"city": "Pa\\"ris}", "days": [1, {"x": 2}]}}; ' +
  '{"name": "now", "parameters": {}}';

Deno.test("ToolCallParser (forced): deltas in any chunking reassemble to the calls, arguments verbatim", () => {
  const want = [
    { id: "call_0", name: "get_weather", arguments: '{"city": "Pa\\"ris}", "days": [1, {"x": 2}]}' },
    { id: "call_1", name: "now", arguments: "{}" },
  ];
  for (let seed = 0; seed < 30; seed++) {
    const p = parser(true);
    const { content, deltas } = feed(p, seed === 0 ? [...FORCED_TEXT] : chunks(FORCED_TEXT, seed));
    assert.equal(content, "");
    assert.deepEqual(reassemble(deltas), want);
    assert.deepEqual(p.calls, want);
    for (const c of p.calls) JSON.parse(c.arguments);
  }
});

Deno.test("ToolCallParser (forced): a call's first delta waits for its name; a cut call keeps what came", () => {
  const p = parser(true);
  assert.deepEqual(p.push('{"name": "get_wea').calls, []);
  assert.deepEqual(p.push('ther", "parameters": {"ci').calls, [
    { index: 0, id: "call_0", name: "get_weather", arguments: "" },
    { index: 0, arguments: '{"ci' },
  ]);
  assert.deepEqual(p.finish().calls, []);
  assert.deepEqual(p.calls, [{ id: "call_0", name: "get_weather", arguments: '{"ci' }]);
});

Deno.test("ToolCallParser (forced): scalar parameters end at the call's closing brace", () => {
  const p = parser(true);
  feed(p, ['{"name": "now", "parameters": 12', "}"]);
  assert.deepEqual(p.calls, [{ id: "call_0", name: "now", arguments: "12" }]);
});

Deno.test("ToolCallParser (auto): text is content at once; a call is held and parsed at the end", () => {
  const text = parser(false);
  assert.deepEqual(text.push("Hello"), { content: "Hello", calls: [] });
  assert.deepEqual(feed(text, [" there"]).content, " there");

  for (let seed = 0; seed < 10; seed++) {
    const p = parser(false);
    const pieces = chunks(
      ' {"name": "now", "arguments": {"tz":"UTC"}} ;\n{"name":"get_weather","parameters":{}}',
      seed,
    );
    const first = p.push(pieces[0]);
    assert.deepEqual(first, { content: "", calls: [] });
    const { content, deltas } = feed(p, pieces.slice(1));
    assert.equal(content, "");
    assert.deepEqual(reassemble(deltas), [
      { id: "call_0", name: "now", arguments: '{"tz":"UTC"}' },
      { id: "call_1", name: "get_weather", arguments: "{}" },
    ]);
  }
});

Deno.test("ToolCallParser (auto): what is not a call of a known function comes back as content", () => {
  for (
    const text of [
      '{"name": "unknown", "parameters": {}}',
      '{"name": "now", "parameters": [1]}',
      '{"name": "now", "parameters": {}} and more',
      '{"name": "now", "parameters": {',
      "{not json}",
    ]
  ) {
    const { content, deltas } = feed(parser(false), chunks(text, 3));
    assert.equal(content, text);
    assert.deepEqual(deltas, []);
  }
});

Deno.test("ToolCallParser (auto): without parallel_tool_calls only the first call is kept", () => {
  const p = parser(false, false);
  const { deltas } = feed(p, ['{"name": "now", "parameters": {}}; {"name": "now", "parameters": {"a": 1}}']);
  assert.equal(reassemble(deltas).length, 1);
  assert.equal(p.calls.length, 1);
});

Deno.test("parseToolCalls() and jsonValueEnd() read whole JSON values only", () => {
  assert.equal(jsonValueEnd('{"a": "}"} x', 0), 10);
  assert.equal(jsonValueEnd("[1, [2]], 3", 0), 8);
  assert.equal(jsonValueEnd('{"a": 1', 0), -1);
  assert.deepEqual(parseToolCalls('{"name": "now", "parameters": {"b": [1]}}', NAMES), [
    { name: "now", arguments: '{"b":[1]}' },
  ]);
  assert.equal(parseToolCalls("", NAMES), null);
});
