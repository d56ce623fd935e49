// Where the tests find the shared fixtures (checkpoints, references, corpus): $TRELLIS_FIXTURES, else the
// shared/fixtures folder next to the clone. Tests that need them skip, saying why, when they are absent.
import { fileURLToPath } from "node:url";

/** The small 2-bit model committed under models/, with a trailing slash. */
export const EMBEDDED_MODEL_DIR = fileURLToPath(new URL("../../models/llama2-qtip-2bit/", import.meta.url));

let found: string | null | undefined;

/** The fixtures folder with a trailing slash, or null when it has no manifest.json (said once). */
export function fixturesDir(): string | null {
  if (found !== undefined) return found;
  const env = Deno.env.get("TRELLIS_FIXTURES");
  const dir = (env ?? fileURLToPath(new URL("../../../shared/fixtures/", import.meta.url))).replace(
    /\/?$/,
    "/",
  );
  try {
    Deno.statSync(`${dir}manifest.json`);
    found = dir;
  } catch {
    console.warn(`Skipping fixture tests: no fixtures at "${dir}" (set TRELLIS_FIXTURES)`);
    found = null;
  }
  return found;
}

/** For Deno.test's `ignore`: true when the fixtures are absent. */
export function noFixtures(): boolean {
  return fixturesDir() === null;
}
