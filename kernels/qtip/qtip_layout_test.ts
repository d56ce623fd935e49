// Checks the GPU layout on the CPU: decoding toGpuLayout's buffer the kernels' way gives decodeHatW's hatW.
import { decodeGpuLayout, fuseGpuLayouts, GPU_LAYOUT_HEADER, toGpuLayout } from "./qtip_layout.ts";
import { codeV, decodeHatW, f16FromBits, type QtipCode, type TrellisLayout } from "./qtip_ref.ts";
import { fixturesDir, loadFixtureLinears, noFixtures } from "./_fixtures.ts";
import { seededRandom } from "../../test/support/mod.ts";

function randomWords(count: number, seed: number): Uint16Array {
  const r = seededRandom(seed);
  return Uint16Array.from({ length: count }, () => Math.floor(r() * 65536));
}

function randomTlut(seed: number): Uint16Array {
  const r = seededRandom(seed);
  return new Uint16Array(new Float16Array(Array.from({ length: 1024 }, () => 4 * r() - 2)).buffer);
}

function assertSame(a: Float32Array, b: Float32Array, label: string): void {
  if (a.length !== b.length) throw new Error(`${label}: length ${a.length}, expected ${b.length}`);
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i])) throw new Error(`${label}: differs at ${i}: got ${a[i]}, expected ${b[i]}`);
  }
}

const codes: QtipCode[] = ["hyb", "1mad", "3inst"];
const layouts: TrellisLayout[] = ["plain", "swizzled"];

for (const code of codes) {
  for (const K of [2, 3, 4]) {
    for (const layout of layouts) {
      Deno.test(`toGpuLayout() keeps decodeHatW's hatW for ${code} K=${K} ${layout}`, () => {
        const m = 64, n = 96;
        const words = randomWords((m * n * K) / 16, K * 10 + code.length);
        const tlut = randomTlut(K);
        const want = decodeHatW(words, { m, n, code, K, tlut, layout });
        const gpu = toGpuLayout(words, { m, n, K, V: codeV(code), layout });
        assertSame(decodeGpuLayout(gpu, { m, n, code, tlut }), want, `${code} K=${K} ${layout}`);
      });
    }
  }
}

Deno.test("fuseGpuLayouts() stacks linears along m", () => {
  const K = 3, n = 64;
  const a = randomWords((32 * n * K) / 16, 1), b = randomWords((64 * n * K) / 16, 2);
  const tlut = randomTlut(3);
  const opts = (m: number) => ({ m, n, K, V: 2, layout: "swizzled" as const });
  const fused = fuseGpuLayouts([toGpuLayout(a, opts(32)), toGpuLayout(b, opts(64))]);
  const got = decodeGpuLayout(fused, { m: 96, n, code: "hyb", tlut });
  const want = new Float32Array(96 * n);
  want.set(decodeHatW(a, { m: 32, n, code: "hyb", K, tlut, layout: "swizzled" }));
  want.set(decodeHatW(b, { m: 64, n, code: "hyb", K, tlut, layout: "swizzled" }), 32 * n);
  assertSame(got, want, "fused");
  let threw = false;
  try {
    fuseGpuLayouts([toGpuLayout(a, opts(32)), toGpuLayout(a, { ...opts(32), layout: "plain" })]);
  } catch {
    threw = true;
  }
  if (!threw) throw new Error("fusing different orders did not throw");
  if (fused.length !== GPU_LAYOUT_HEADER + (96 / 16) * (n / 16) * 8 * K) {
    throw new Error("fused size is wrong");
  }
});

Deno.test("toGpuLayout() of the fixtures decodes to hatW_decoded", { ignore: noFixtures() }, () => {
  const dir = fixturesDir()!;
  for (const f of loadFixtureLinears(dir)) {
    const gpu = toGpuLayout(f.trellis, { m: f.m, n: f.n, K: 2, V: 2, layout: "swizzled" });
    const hat = decodeGpuLayout(gpu, { m: f.m, n: f.n, code: "hyb", tlut: f.tlut });
    for (let i = 0; i < hat.length; i++) {
      if (hat[i] !== f16FromBits(f.hatW[i])) throw new Error(`${f.label}: differs at ${i}: got ${hat[i]}`);
    }
  }
});
