import assert from "node:assert/strict";
import { StopMatcher } from "./stop.ts";

/** Feeds pieces one at a time; returns everything released, whether it stopped, and the flush. */
function run(stops: string[], pieces: string[], includeStop = false) {
  const m = new StopMatcher(stops, includeStop);
  const released: string[] = [];
  for (const p of pieces) {
    const r = m.push(p);
    released.push(r.text);
    if (r.stopped) return { released, stopped: true, text: released.join("") };
  }
  released.push(m.flush());
  return { released, stopped: false, text: released.join("") };
}

Deno.test("StopMatcher holds back a partial stop string across pieces and never releases it", () => {
  const r = run(["END"], ["ab", "E", "N", "D", "zz"]);
  assert.equal(r.stopped, true);
  assert.equal(r.text, "ab");
  assert.deepEqual(r.released, ["ab", "", "", ""]);
});

Deno.test("StopMatcher releases held text once it cannot be a stop string", () => {
  const r = run(["END"], ["E", "N", "x", "y"]);
  assert.equal(r.stopped, false);
  assert.deepEqual(r.released, ["", "", "ENx", "y", ""]);
});

Deno.test("StopMatcher flushes held text at the end of the sequence", () => {
  const r = run(["END"], ["hello E"]);
  assert.deepEqual(r.released, ["hello ", "E"]);
});

Deno.test("StopMatcher picks the earliest match among several stop strings", () => {
  const r = run(["world", "lo w"], ["hello world"]);
  assert.equal(r.text, "hel");
});

Deno.test("StopMatcher finds a stop string inside one piece and drops what follows", () => {
  const r = run(["\n"], ["line one\nline two"]);
  assert.equal(r.text, "line one");
  assert.equal(r.stopped, true);
});

Deno.test("StopMatcher keeps the stop string when includeStop is set", () => {
  const r = run(["END"], ["xE", "ND", "y"], true);
  assert.equal(r.text, "xEND");
});

Deno.test("StopMatcher holds from the earliest position that can still start a stop string", () => {
  // "aab" could start "aabc" at 0 and "ab" would end inside; hold everything.
  const m = new StopMatcher(["aabc", "bz"]);
  assert.equal(m.push("aab").text, "");
  const r = m.push("x");
  assert.deepEqual(r, { text: "aabx", stopped: false });
});

Deno.test("StopMatcher without stop strings passes text straight through", () => {
  const m = new StopMatcher([]);
  assert.deepEqual(m.push("E"), { text: "E", stopped: false });
  assert.equal(m.flush(), "");
});

Deno.test("StopMatcher ignores text after it stopped", () => {
  const m = new StopMatcher(["x"]);
  assert.equal(m.push("ax").stopped, true);
  assert.deepEqual(m.push("more"), { text: "", stopped: true });
});
