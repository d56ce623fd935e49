import assert from "node:assert/strict";
import { formatBytes, formatDuration, LoadProgress } from "./progress.ts";

/** A LoadProgress with captured output and a hand-driven clock (milliseconds). */
function harness(total: number, tty: boolean) {
  const out: string[] = [];
  const clock = { ms: 0 };
  const p = new LoadProgress(total, "loading weights", {
    write: (t) => out.push(t),
    tty,
    now: () => clock.ms,
  });
  return { p, out, clock };
}

Deno.test("LoadProgress logs one line per 10% when stderr is not a terminal", () => {
  const total = 20.2e9;
  const { p, out, clock } = harness(total, false);
  // 2.02 GB per second: after 4 s, 8.08 GB (40%).
  for (let i = 1; i <= 4; i++) {
    clock.ms = i * 1000;
    p.advance(total / 10);
  }
  assert.deepEqual(out, [
    "loading weights: 10% (2.0 / 20.2 GB, 2.0 GB/s)\n",
    "loading weights: 20% (4.0 / 20.2 GB, 2.0 GB/s)\n",
    "loading weights: 30% (6.1 / 20.2 GB, 2.0 GB/s)\n",
    "loading weights: 40% (8.1 / 20.2 GB, 2.0 GB/s)\n",
  ]);
  // Small steps inside one decile print nothing; one big step across several prints the last.
  clock.ms = 4500;
  p.advance(total / 100);
  assert.equal(out.length, 4);
  clock.ms = 8000;
  p.advance(total * 0.35); // 76% in all: the 70% line
  assert.equal(out.at(-1), "loading weights: 70% (15.4 / 20.2 GB, 1.9 GB/s)\n");
  assert.equal(out.length, 5);
  clock.ms = 10000;
  p.advance(total - p.loaded);
  assert.equal(out.at(-1), "loading weights: 100% (20.2 / 20.2 GB, 2.0 GB/s)\n");
  p.done();
  assert.equal(out.at(-1), "loading weights: done, 20.2 GB in 10.0 s (2.0 GB/s)\n");
  p.done();
  p.advance(5);
  assert.equal(out.length, 7);
});

Deno.test("LoadProgress redraws a bar with percent, MB/s and ETA at most 10 times a second on a TTY", () => {
  const total = 400e6;
  const { p, out, clock } = harness(total, true);
  clock.ms = 1000;
  p.advance(100e6); // 25% at 100 MB/s: 300 MB left = 3 s
  assert.equal(out.length, 1);
  assert.equal(
    out[0],
    "\rloading weights [######------------------]  25% 100.0 / 400.0 MB 100.0 MB/s ETA 0:03\x1b[K",
  );
  // Within 100 ms of the last draw: no redraw.
  clock.ms = 1050;
  p.advance(1e6);
  clock.ms = 1099;
  p.advance(1e6);
  assert.equal(out.length, 1);
  clock.ms = 1100;
  p.advance(1e6);
  assert.equal(out.length, 2);
  // 103 MB in 1.1 s = 93.6 MB/s; 297 MB left = 3.2 s, shown rounded up.
  assert.equal(
    out[1],
    "\rloading weights [######------------------]  25% 103.0 / 400.0 MB 93.6 MB/s ETA 0:04\x1b[K",
  );
  // Reaching the total always draws, even inside the throttle window.
  clock.ms = 1150;
  p.advance(total - p.loaded);
  assert.equal(out.length, 3);
  assert.match(out[2], /\[#{24}\] 100% 400\.0 \/ 400\.0 MB .* ETA 0:00/);
  clock.ms = 2000;
  p.done();
  assert.equal(out[3], "\rloading weights: done, 400.0 MB in 2.0 s (200.0 MB/s)\x1b[K\n");
});

Deno.test("LoadProgress handles an empty load and a clock that has not moved", () => {
  const { p, out } = harness(0, true);
  p.advance(0);
  assert.match(out[0], /100% 0 \/ 0 B 0 B\/s ETA --:--/);
  p.done();
  assert.equal(out[1], "\rloading weights: done, 0 B in 0.0 s (0 B/s)\x1b[K\n");
});

Deno.test("formatBytes() and formatDuration() pick units", () => {
  assert.equal(formatBytes(999), "999 B");
  assert.equal(formatBytes(1500), "1.5 kB");
  assert.equal(formatBytes(8.12e9), "8.1 GB");
  assert.equal(formatDuration(0), "0:00");
  assert.equal(formatDuration(61.2), "1:02");
  assert.equal(formatDuration(3725), "1:02:05");
});
