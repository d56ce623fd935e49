// Waiting in tests on conditions and promises without wall-clock deadlines: under `deno test --parallel`
// beside lavapipe work anything can be slow, so only a hang may fail a test, never lateness.

/** Only turns a hang into a failure: no test's outcome may depend on how fast the machine is. */
const HANG_MS = 60_000;

/**
 * Waits until `check()` is true, re-checking after every few ms of event-loop turns. There is no tight
 * deadline: under `deno test --parallel` beside lavapipe work a fake-engine step can take a second, so a
 * condition that will become true must never fail for being late; HANG_MS only names a hang.
 */
export async function waitFor(check: () => boolean, what = "condition"): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > HANG_MS) throw new Error(`Still waiting for ${what} after ${HANG_MS} ms`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** `promise`, or a failure naming `what` if it has not settled after HANG_MS (a hang, not slowness). */
export async function settles<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Still waiting for ${what} after ${HANG_MS} ms`)), HANG_MS);
  });
  try {
    return await Promise.race([promise, hang]);
  } finally {
    clearTimeout(timer);
  }
}
