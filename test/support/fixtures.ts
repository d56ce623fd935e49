// Where the tests find the shared fixtures (checkpoints, references, corpus): $TRELLIS_FIXTURES, else the
// shared/fixtures folder next to the clone. Tests that need them are ignored, saying why, when they are
// absent; TRELLIS_REQUIRE_FIXTURES=1 makes them run (and fail, naming the missing file) instead.
import { fileURLToPath } from "node:url";

/** The small 2-bit model committed under models/, with a trailing slash. */
export const EMBEDDED_MODEL_DIR = fileURLToPath(new URL("../../models/llama2-qtip-2bit/", import.meta.url));

/** Set by .ci/run when the fixtures were provided: a missing or partial fixtures folder fails the tests. */
export const REQUIRE_FIXTURES = Deno.env.get("TRELLIS_REQUIRE_FIXTURES") === "1";

/** Where the fixtures should be, with a trailing slash: $TRELLIS_FIXTURES, else ../shared/fixtures/. */
export const FIXTURES_DIR = (Deno.env.get("TRELLIS_FIXTURES") ??
  fileURLToPath(new URL("../../../shared/fixtures/", import.meta.url))).replace(/\/?$/, "/");

let found: string | null | undefined;

/**
 * The fixtures folder with a trailing slash, or null when it has no manifest.json (said once per test
 * module). Under TRELLIS_REQUIRE_FIXTURES=1 it is always the folder, so tests read it and fail on what is
 * missing.
 */
export function fixturesDir(): string | null {
  if (found !== undefined) return found;
  try {
    Deno.statSync(`${FIXTURES_DIR}manifest.json`);
    found = FIXTURES_DIR;
  } catch {
    if (REQUIRE_FIXTURES) {
      found = FIXTURES_DIR;
    } else {
      console.warn(`Skipping fixture tests: no fixtures at "${FIXTURES_DIR}" (set TRELLIS_FIXTURES)`);
      found = null;
    }
  }
  return found;
}

/** For Deno.test's `ignore`: true when the fixtures are absent (and not required). */
export function noFixtures(): boolean {
  return fixturesDir() === null;
}
