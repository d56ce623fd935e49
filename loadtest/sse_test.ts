import assert from "node:assert/strict";
import { type SseEvent, SseParser } from "./sse.ts";

function parseAll(chunks: (string | Uint8Array)[]): { events: SseEvent[]; parser: SseParser } {
  const parser = new SseParser();
  const events: SseEvent[] = [];
  for (const c of chunks) events.push(...parser.push(c));
  events.push(...parser.end());
  return { events, parser };
}

const STREAM =
  'data: {"a":1}\n\n: keep-alive\n\nevent: error\ndata: line one\ndata: line two\n\nid: 7\ndata:[DONE]\n\n';

Deno.test("sse: events, comments, multi-line data, event names and ids", () => {
  const { events, parser } = parseAll([STREAM]);
  assert.deepEqual(events, [
    { event: "message", data: '{"a":1}', id: "" },
    { event: "error", data: "line one\nline two", id: "" },
    { event: "message", data: "[DONE]", id: "7" },
  ]);
  assert.equal(parser.comments, 1);
});

Deno.test("sse: byte-at-a-time, CRLF and CR line ends give the same events", () => {
  const whole = parseAll([STREAM]).events;
  const bytes = new TextEncoder().encode(STREAM);
  assert.deepEqual(parseAll([...bytes].map((b) => new Uint8Array([b]))).events, whole);
  const crlf = STREAM.replaceAll("\n", "\r\n");
  assert.deepEqual(parseAll([crlf]).events, whole);
  // A CR ending one chunk and the LF starting the next are one line end, not an empty line.
  assert.deepEqual(parseAll(crlf.split(/(?<=\r)/)).events, whole);
  assert.deepEqual(parseAll([STREAM.replaceAll("\n", "\r")]).events, whole);
});

Deno.test("sse: a UTF-8 character split across chunks arrives whole", () => {
  const bytes = new TextEncoder().encode('data: {"t":"héllo 🦕"}\n\n');
  const cut = bytes.indexOf(0xf0) + 2; // inside the four-byte dinosaur
  const { events } = parseAll([bytes.slice(0, cut), bytes.slice(cut)]);
  assert.deepEqual(events.map((e) => JSON.parse(e.data).t), ["héllo 🦕"]);
});

Deno.test("sse: one space after the colon is dropped, a second kept; no-colon lines are fields", () => {
  const { events } = parseAll(["data:  two spaces\ndata\n\n"]);
  assert.deepEqual(events.map((e) => e.data), [" two spaces\n"]);
});

Deno.test("sse: an event without a closing blank line is dropped at end of stream and shows as pending", () => {
  const parser = new SseParser();
  assert.deepEqual(parser.push('data: {"a":1}\n\ndata: [DONE]\n'), [{
    event: "message",
    data: '{"a":1}',
    id: "",
  }]);
  assert.equal(parser.pending, true);
  assert.deepEqual(parser.end(), []);
  assert.equal(parser.pending, false);
  // Blank lines without data dispatch nothing.
  assert.deepEqual(new SseParser().push("\n\n\nevent: x\n\n"), []);
});
