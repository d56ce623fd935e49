import { buildRopeTable, rope, ROPE_SOURCE, type RopeScaling } from "./rope.ts";
import { ropeRef } from "./rope_ref.ts";
import {
  assertClose,
  assertCompilesCleanly,
  noGpu,
  randomF32,
  readF32,
  run,
  testKernels,
  upload,
} from "../../test/support/mod.ts";

const NO_GPU = await noGpu();

const LLAMA31: RopeScaling = {
  type: "llama3",
  factor: 8,
  lowFreqFactor: 1,
  highFreqFactor: 4,
  originalMaxPositionEmbeddings: 8192,
};

/** Inverse frequencies in doubles, straight from the formulas; which llama3 region each one fell in. */
function invFreqDouble(
  headDim: number,
  theta: number,
  s?: RopeScaling,
): { inv: number[]; regions: string[] } {
  const inv: number[] = [], regions: string[] = [];
  for (let i = 0; i < headDim / 2; i++) {
    const f = Math.pow(theta, -(2 * i) / headDim);
    if (!s) {
      inv.push(f), regions.push("none");
      continue;
    }
    const wavelen = (2 * Math.PI) / f;
    const old = s.originalMaxPositionEmbeddings!, lo = s.lowFreqFactor!, hi = s.highFreqFactor!;
    if (wavelen < old / hi) inv.push(f), regions.push("high");
    else if (wavelen > old / lo) inv.push(f / s.factor!), regions.push("low");
    else {
      const smooth = (old / wavelen - lo) / (hi - lo);
      inv.push((1 - smooth) * (f / s.factor!) + smooth * f), regions.push("medium");
    }
  }
  return { inv, regions };
}

const tableCases = [
  { headDim: 8, theta: 10000, scaling: undefined },
  { headDim: 128, theta: 10000, scaling: undefined },
  { headDim: 64, theta: 500000, scaling: LLAMA31 },
  { headDim: 128, theta: 500000, scaling: LLAMA31 },
  { headDim: 128, theta: 500000, scaling: { ...LLAMA31, factor: 32, highFreqFactor: 2 } },
];

for (const c of tableCases) {
  const name = `headDim=${c.headDim} theta=${c.theta} ${
    c.scaling ? `llama3 factor=${c.scaling.factor}` : "default"
  }`;
  Deno.test(`buildRopeTable() matches a double-precision computation at ${name}`, () => {
    const maxPos = 8200;
    const table = buildRopeTable({ headDim: c.headDim, theta: c.theta, maxPos, scaling: c.scaling });
    if (table.length !== maxPos * c.headDim) {
      throw new Error(`table length ${table.length}, want ${maxPos * c.headDim}`);
    }
    const { inv, regions } = invFreqDouble(c.headDim, c.theta, c.scaling);
    if (c.scaling) {
      for (const r of ["high", "medium", "low"]) {
        if (!regions.includes(r)) throw new Error(`case does not exercise the llama3 ${r}-frequency region`);
      }
    }
    const half = c.headDim / 2;
    for (const pos of [0, 1, 2, 3, 5, 100, 1000, 4097, 8191, 8199]) {
      for (let i = 0; i < half; i++) {
        const angle = pos * inv[i];
        // f32 rounding of inv_freq (more roundings in the llama3 blend) and of the angle leave the
        // table's angle off by up to 2^-21.1 of itself on these cases; atol 1e-6 covers cos/sin rounding.
        const tol = 1e-6 + angle * 2 ** -20;
        const got = [table[(pos * half + i) * 2], table[(pos * half + i) * 2 + 1]];
        const want = [Math.cos(angle), Math.sin(angle)];
        for (let j = 0; j < 2; j++) {
          if (!(Math.abs(got[j] - want[j]) <= tol)) {
            throw new Error(
              `pos ${pos} pair ${i} ${j ? "sin" : "cos"}: got ${got[j]}, want ${want[j]} (tol ${tol})`,
            );
          }
        }
      }
    }
  });
}

Deno.test("buildRopeTable() keeps position 0 as the identity and pair 0 at frequency 1", () => {
  const half = 32;
  const table = buildRopeTable({ headDim: 64, theta: 500000, maxPos: 3, scaling: LLAMA31 });
  for (let i = 0; i < half; i++) {
    if (table[2 * i] !== 1 || table[2 * i + 1] !== 0) throw new Error(`pos 0 pair ${i} is not (1, 0)`);
  }
  // inv_freq[0] = 1 sits in the high-frequency band, which llama3 leaves alone: angle = pos exactly.
  if (table[half * 2] !== Math.fround(Math.cos(1))) {
    throw new Error(`cos at pos 1 pair 0 is ${table[half * 2]}`);
  }
  if (table[2 * half * 2 + 1] !== Math.fround(Math.sin(2))) {
    throw new Error(`sin at pos 2 is ${table[4 * half + 1]}`);
  }
});

Deno.test("buildRopeTable() rejects unsupported rope types and incomplete llama3 scaling", () => {
  const expectThrow = (f: () => unknown, words: string[]) => {
    try {
      f();
    } catch (e) {
      const msg = (e as Error).message;
      for (const w of words) if (!msg.includes(w)) throw new Error(`message "${msg}" lacks "${w}"`);
      return;
    }
    throw new Error("expected an error");
  };
  expectThrow(
    () => buildRopeTable({ headDim: 64, theta: 1e4, maxPos: 4, scaling: { type: "yarn", factor: 4 } }),
    [
      '"yarn"',
      '"default"',
      '"llama3"',
    ],
  );
  expectThrow(
    () => buildRopeTable({ headDim: 64, theta: 1e4, maxPos: 4, scaling: { type: "llama3", factor: 8 } }),
    [
      "lowFreqFactor",
    ],
  );
  // rope_type "default" with a scaling object is the same as none.
  const a = buildRopeTable({ headDim: 16, theta: 1e4, maxPos: 9, scaling: { type: "default" } });
  const b = buildRopeTable({ headDim: 16, theta: 1e4, maxPos: 9 });
  assertClose(a, b, { atol: 0, rtol: 0 });
});

// GPU rotation vs ropeRef with the same table: only f32 rounding of two products and a sum differ.
const TOL = { atol: 1e-6, rtol: 1e-6 };
const MAX_POS = 1100;

const gpuCases = [
  { nHeads: 4, nKvHeads: 2, headDim: 64, positions: [0, 5, 1000, 3] },
  { nHeads: 2, nKvHeads: 1, headDim: 128, positions: [7, 0, 1099] },
  { nHeads: 3, nKvHeads: 1, headDim: 8, positions: [2, 1, 0, 9, 4] },
  { nHeads: 4, nKvHeads: 2, headDim: 64, positions: Array.from({ length: 137 }, (_, i) => (i * 37) % 1050) },
];

Deno.test("rope() compiles cleanly", { ignore: NO_GPU }, async () => {
  await assertCompilesCleanly(await testKernels(), "rope", ROPE_SOURCE);
});

for (const c of gpuCases) {
  const T = c.positions.length;
  Deno.test(
    `rope() matches ropeRef at T=${T} nHeads=${c.nHeads} nKvHeads=${c.nKvHeads} headDim=${c.headDim}`,
    { ignore: NO_GPU },
    async () => {
      const k = await testKernels();
      const table = buildRopeTable({ headDim: c.headDim, theta: 500000, maxPos: MAX_POS, scaling: LLAMA31 });
      const q = randomF32(T * c.nHeads * c.headDim, T + c.headDim, -2, 2);
      const kk = randomF32(T * c.nKvHeads * c.headDim, T + c.headDim + 1, -2, 2);
      const qBuf = upload(k, q), kBuf = upload(k, kk);
      await run(k, (pass) =>
        rope(k, pass, {
          q: qBuf,
          k: kBuf,
          positions: upload(k, Uint32Array.from(c.positions)),
          cosSin: upload(k, table),
          T,
          nHeads: c.nHeads,
          nKvHeads: c.nKvHeads,
          headDim: c.headDim,
          maxPos: MAX_POS,
        }));
      assertClose(await readF32(k, qBuf, q.length), ropeRef(q, c.positions, table, c.nHeads, c.headDim), {
        ...TOL,
        label: "q",
      });
      assertClose(await readF32(k, kBuf, kk.length), ropeRef(kk, c.positions, table, c.nKvHeads, c.headDim), {
        ...TOL,
        label: "k",
      });
    },
  );
}

/** Columns [col, col + width) of each row of a (rows, stride) matrix starting at offset, densely. */
function columns(
  m: Float32Array,
  o: { rows: number; stride: number; offset: number; width: number },
): Float32Array {
  const out = new Float32Array(o.rows * o.width);
  for (let r = 0; r < o.rows; r++) {
    out.set(m.subarray(o.offset + r * o.stride, o.offset + r * o.stride + o.width), r * o.width);
  }
  return out;
}

for (const fusedOneBuffer of [true, false]) {
  Deno.test(
    `rope() rotates q and k inside a fused QKV buffer (${fusedOneBuffer ? "one binding" : "two bindings"})`,
    { ignore: NO_GPU },
    async () => {
      const k = await testKernels();
      const nHeads = 4, nKvHeads = 2, headDim = 16, T = 6, base = 5;
      const qW = nHeads * headDim, kvW = nKvHeads * headDim;
      const stride = qW + 2 * kvW + 3; // (T, q | k | v | pad), starting at element `base`
      const positions = [9, 3, 3, MAX_POS + 50, 0, 77]; // MAX_POS + 50 is clamped to MAX_POS - 1
      const posBuf = new Uint32Array([1, 2, ...positions]); // read from positionsOffset 2
      const table = buildRopeTable({ headDim, theta: 10000, maxPos: MAX_POS });
      const qkv = randomF32(base + T * stride + 4, 99, -2, 2);
      const buf = upload(k, qkv);
      const kArg = fusedOneBuffer ? buf : { buffer: buf }; // a second binding object forces two dispatches
      await run(k, (pass) =>
        rope(k, pass, {
          q: buf,
          k: kArg,
          positions: upload(k, posBuf),
          cosSin: upload(k, table),
          T,
          nHeads,
          nKvHeads,
          headDim,
          maxPos: MAX_POS,
          qStride: stride,
          qOffset: base,
          kStride: stride,
          kOffset: base + qW,
          positionsOffset: 2,
        }));
      const clamped = positions.map((p) => Math.min(p, MAX_POS - 1));
      const want = qkv.slice();
      const qDense = ropeRef(
        columns(qkv, { rows: T, stride, offset: base, width: qW }),
        clamped,
        table,
        nHeads,
        headDim,
      );
      const kDense = ropeRef(
        columns(qkv, { rows: T, stride, offset: base + qW, width: kvW }),
        clamped,
        table,
        nKvHeads,
        headDim,
      );
      for (let t = 0; t < T; t++) {
        want.set(qDense.subarray(t * qW, (t + 1) * qW), base + t * stride);
        want.set(kDense.subarray(t * kvW, (t + 1) * kvW), base + t * stride + qW);
      }
      // v columns, padding and the prefix must come back untouched (exactly).
      assertClose(await readF32(k, buf, qkv.length), want, TOL);
    },
  );
}
