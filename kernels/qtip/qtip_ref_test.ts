// Checks the plain-TS QTIP decode: hand-computed code values, pack/unpack round trips, and the fixtures'
// hatW_decoded (made by the official Python) bit for bit.
import {
  decodeHatW,
  expandLut,
  f16FromBits,
  hybValues,
  oneMadValue,
  packTrellisPlain,
  swizzleWords,
  threeInstValue,
  unpackTrellisPlain,
  unswizzleWords,
} from "./qtip_ref.ts";
import { fixturesDir, loadFixtureLinears, noFixtures } from "./_fixtures.ts";
import { seededRandom } from "../../test/support/mod.ts";

function assertEq(actual: unknown, expected: unknown, label: string): void {
  if (actual !== expected) throw new Error(`${label}: got ${actual}, expected ${expected}`);
}

function assertArraysEqual(a: ArrayLike<number>, b: ArrayLike<number>, label: string): void {
  assertEq(a.length, b.length, `${label} length`);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) throw new Error(`${label}: first difference at ${i}: got ${a[i]}, expected ${b[i]}`);
  }
}

/** Random MSB-first bitstream words for `tiles` tiles. */
function randomWords(tiles: number, K: number, seed: number): Uint16Array {
  const r = seededRandom(seed);
  const w = new Uint16Array(tiles * 16 * K);
  for (let i = 0; i < w.length; i++) w[i] = Math.floor(r() * 65536);
  return w;
}

/** States read straight off the bitstream: state j = the 16 bits at j*K*V, circular. */
function windowStates(words: Uint16Array, K: number, V: number): number[] {
  const bits = 256 * K, tiles = words.length / (16 * K), out: number[] = [];
  for (let t = 0; t < tiles; t++) {
    for (let j = 0; j < 256 / V; j++) {
      let s = 0;
      for (let b = 0; b < 16; b++) {
        const i = (j * K * V + b) % bits;
        s = s * 2 + ((words[t * 16 * K + (i >> 4)] >> (15 - (i & 15))) & 1);
      }
      out.push(s);
    }
  }
  return out;
}

Deno.test("oneMadValue() matches hand-computed states", () => {
  // s = 0: x = 76625530 = 0x0491367A; bytes 4 + 145 + 54 + 122 = 325; (325 - 510) / 147.800537109375.
  assertEq(oneMadValue(0), Math.fround(-185 / 147.800537109375), "s=0");
  // s = 1: x = 34038481 + 76625530 = 110664011 = 0x0698994B; bytes 6 + 152 + 153 + 75 = 386 -> -124.
  assertEq(oneMadValue(1), Math.fround(-124 / 147.800537109375), "s=1");
  // s = 65535: 65535 * 34038481 + 76625530 = 2230828565365 = 519 * 2^32 + 0x655AD3A9 (mod 2^32);
  // bytes 0x65 + 0x5A + 0xD3 + 0xA9 = 101 + 90 + 211 + 169 = 571 -> 61.
  assertEq(oneMadValue(65535), Math.fround(61 / 147.800537109375), "s=65535");
});

Deno.test("threeInstValue() matches hand-computed states", () => {
  // s = 0: x = 64248484 = 0x03D45AA4; & 0x8FFF8FFF = 0x03D40AA4; ^ 0x3B603B60 = 0x38B431C4.
  // 0x38B4 = 2^-1 * (1 + 180/1024) = 0.587890625; 0x31C4 = 2^-3 * (1 + 452/1024) = 0.18017578125;
  // sum 0.76806640625 = 1573 * 2^-11 is an f16, so no rounding.
  assertEq(threeInstValue(0), 0.76806640625, "s=0");
  // s = 1: x = 89226354 + 64248484 = 153474838 = 0x0925D716; masked 0x0125 8716; ^ -> 0x3245BC76.
  // 0x3245 = 2^-3 * (1 + 581/1024) = 0.1959228515625; 0xBC76 = -(1 + 118/1024) = -1.115234375;
  // sum -0.9193115234375 = -1882.75 * 2^-11 rounds to the f16 -1883 * 2^-11 = -0.91943359375.
  assertEq(threeInstValue(1), -0.91943359375, "s=1");
});

Deno.test("hybValues() picks the LUT row and sign from s*(s+1)", () => {
  // tlut row r = (r + 0.5, -r / 4), all exact in f16.
  const tlut = new Uint16Array(
    new Float16Array(Array.from({ length: 1024 }, (_, i) => (i & 1 ? -(i >> 1) / 4 : (i >> 1) + 0.5))).buffer,
  );
  // s = 255: t = 65280 = 0xFF00: bit 15 set (flip); row = (0xFF00 >> 6) & 511 = 1020 & 511 = 508.
  assertEq(hybValues(255, tlut, 9).join(), [-508.5, -127].join(), "s=255");
  // s = 1000: t = 1001000 = 0xF4628: bit 15 clear; row = 0x3D18 & 0x1FF = 280.
  assertEq(hybValues(1000, tlut, 9).join(), [280.5, -70].join(), "s=1000");
  // s = 65535: t = 0xFFFF0000: bit 15 clear; row = 0x3FFFC00 & 0x1FF = 0.
  assertEq(hybValues(65535, tlut, 9).join(), [0.5, -0].join(), "s=65535");
  // With 8 LUT bits the row is (t >> 7) & 255. s = 300: t = 90300 = 0x160BC: bit 15 clear; 90300 >> 7 = 705;
  // 705 & 255 = 193, the pair (193.5, -48.25).
  assertEq(hybValues(300, tlut, 8).join(), [193.5, -48.25].join(), "s=300 tlutBits=8");
});

for (const K of [2, 3, 4]) {
  for (const V of [1, 2]) {
    Deno.test(`packTrellisPlain() and unpackTrellisPlain() round-trip at K=${K} V=${V}`, () => {
      const words = randomWords(3, K, 100 * K + V);
      const states = windowStates(words, K, V);
      assertArraysEqual(unpackTrellisPlain(words, K, V), states, "unpack");
      assertArraysEqual(packTrellisPlain(states, K, V), words, "pack");
    });
  }
}

Deno.test("packTrellisPlain() rejects broken overlaps, the wrap-around included", () => {
  const K = 2, V = 2;
  const states = windowStates(randomWords(1, K, 7), K, V);
  const inner = states.slice();
  inner[5] ^= 1 << 15; // its high bits no longer continue state 4
  let threw = false;
  try {
    packTrellisPlain(inner, K, V);
  } catch {
    threw = true;
  }
  assertEq(threw, true, "inner overlap");
  const wrap = states.slice();
  wrap[0] ^= 1 << 15; // state 0 no longer continues the last state
  threw = false;
  try {
    packTrellisPlain(wrap, K, V);
  } catch (e) {
    threw = /states 127 and 0/.test(String(e));
  }
  assertEq(threw, true, "wrap-around overlap");
});

/** `data` of row-major `shape` with its axes permuted (torch's permute + contiguous). */
function permuteAxes(data: Uint8Array, shape: number[], perm: number[]): Uint8Array {
  const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const outShape = perm.map((p) => shape[p]);
  const out = new Uint8Array(data.length);
  const idx = outShape.map(() => 0);
  for (let o = 0; o < out.length; o++) {
    out[o] = data[idx.reduce((sum, v, j) => sum + v * strides[perm[j]], 0)];
    for (let j = idx.length - 1; j >= 0 && ++idx[j] === outShape[j]; j--) idx[j] = 0;
  }
  return out;
}

/** Reverses every run of `n` consecutive elements (torch's flip of a last axis of size n). */
function flipLastAxis(data: Uint8Array, n: number): Uint8Array {
  return data.map((_, i) => data[i - (i % n) + (n - 1 - (i % n))]);
}

/**
 * decode_compressed's un-interleave written as its tensor ops (lib/utils/kernel_decompress.py): the
 * little-endian bytes viewed as (m/32, n/32, 32, 2, 2, K), permuted (0, -2, 1, -3, 2, -1), flipped on the
 * last axis, reshaped to (m/16, n/16, 16K, 2), flipped on the last axis, viewed as u16.
 */
function unswizzleAsTorch(words: Uint16Array, m: number, n: number, K: number): Uint16Array {
  const bytes = new Uint8Array(words.buffer, words.byteOffset, words.byteLength);
  const permuted = permuteAxes(bytes, [m / 32, n / 32, 32, 2, 2, K], [0, 4, 1, 3, 2, 5]);
  return new Uint16Array(flipLastAxis(flipLastAxis(permuted, K), 2).buffer);
}

for (const K of [2, 3, 4]) {
  Deno.test(`unswizzleWords() equals decode_compressed's tensor ops, and swizzleWords() inverts it, at K=${K}`, () => {
    const m = 64, n = 96; // 4 x 6 tiles: 2 x 3 interleaved groups of 2 x 2
    const sw = randomWords(24, K, 30 + K);
    const plain = unswizzleWords(sw, m, n, K);
    assertArraysEqual(plain, unswizzleAsTorch(sw, m, n, K), "unswizzle");
    assertArraysEqual(swizzleWords(plain, m, n, K), sw, "round trip");
  });
}

Deno.test("the test's permuteAxes() and flipLastAxis() follow torch's permute and flip", () => {
  // (2, 3) permuted (1, 0) is the transpose; flipping runs of 3 reverses each row.
  assertArraysEqual(
    permuteAxes(Uint8Array.of(1, 2, 3, 4, 5, 6), [2, 3], [1, 0]),
    [1, 4, 2, 5, 3, 6],
    "permute",
  );
  assertArraysEqual(flipLastAxis(Uint8Array.of(1, 2, 3, 4, 5, 6), 3), [3, 2, 1, 6, 5, 4], "flip");
});

Deno.test("decodeHatW() plain layout puts value t of tile (I, J) at row I*16 + t/16, column J*16 + t%16", () => {
  const K = 3, m = 32, n = 48;
  const words = randomWords(6, K, 5);
  const states = windowStates(words, K, 1);
  const hat = decodeHatW(words, { m, n, code: "1mad", K, layout: "plain" });
  for (const [I, J, t] of [[0, 0, 0], [1, 2, 255], [0, 1, 17], [1, 0, 130]]) {
    const s = states[(I * 3 + J) * 256 + t];
    assertEq(hat[(I * 16 + (t >> 4)) * n + J * 16 + (t & 15)], oneMadValue(s), `tile ${I},${J} t=${t}`);
  }
});

Deno.test("expandLut() puts state s's values at row s, V per row, for every code", () => {
  // The hand-computed values of the tests above, found at their rows of the expanded tables.
  const oneMad = expandLut("1mad");
  assertEq(oneMad.length, 65536, "1mad rows");
  assertEq(oneMad[1], Math.fround(-124 / 147.800537109375), "1mad s=1");
  assertEq(oneMad[65535], Math.fround(61 / 147.800537109375), "1mad s=65535");
  const threeInst = expandLut("3inst");
  assertEq(threeInst[0], 0.76806640625, "3inst s=0");
  assertEq(threeInst[1], -0.91943359375, "3inst s=1");
  const tlut = new Uint16Array(
    new Float16Array(Array.from({ length: 1024 }, (_, i) => (i & 1 ? -(i >> 1) / 4 : (i >> 1) + 0.5))).buffer,
  );
  const hyb = expandLut("hyb", tlut, 9);
  assertEq(hyb.length, 2 * 65536, "hyb rows of 2");
  assertEq([hyb[2 * 255], hyb[2 * 255 + 1]].join(), [-508.5, -127].join(), "hyb s=255");
  assertEq([hyb[2 * 1000], hyb[2 * 1000 + 1]].join(), [280.5, -70].join(), "hyb s=1000");
  let threw = "";
  try {
    expandLut("hyb", tlut.slice(0, 100), 9);
  } catch (e) {
    threw = String(e);
  }
  assertEq(/tlut of 1024 f16 values, got 100/.test(threw), true, `short tlut: ${threw}`);
});

Deno.test("decodeHatW() reproduces the fixtures' hatW_decoded bit for bit", { ignore: noFixtures() }, () => {
  const dir = fixturesDir()!;
  for (const f of loadFixtureLinears(dir)) {
    const hat = decodeHatW(f.trellis, {
      m: f.m,
      n: f.n,
      code: "hyb",
      K: 2,
      tlutBits: 9,
      tlut: f.tlut,
      layout: "swizzled",
    });
    const bits = new Uint16Array(new Float16Array(hat).buffer);
    for (let i = 0; i < bits.length; i++) {
      if (bits[i] !== f.hatW[i]) {
        throw new Error(
          `${f.label}: hatW differs at row ${Math.floor(i / f.n)} column ${i % f.n}: ` +
            `got ${hat[i]}, expected ${f16FromBits(f.hatW[i])}`,
        );
      }
    }
  }
});
