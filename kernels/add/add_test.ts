import { add, ADD_IN_PLACE_SOURCE, ADD_SOURCE, addInPlace, copy, COPY_SOURCE } from "./add.ts";
import { addRef, copyRef } from "./add_ref.ts";
import {
  assertClose,
  assertCompilesCleanly,
  noGpu,
  randomF32,
  readF32,
  readU32,
  run,
  scratch,
  testKernels,
  upload,
} from "../_test_utils.ts";

// One f32 addition is correctly rounded on both sides, so results must match bit for bit.
const EXACT = { atol: 0, rtol: 0 };

const cases = [
  { n: 1, aOffset: 0, bOffset: 0, outOffset: 0 },
  { n: 7, aOffset: 3, bOffset: 0, outOffset: 5 },
  { n: 137, aOffset: 0, bOffset: 11, outOffset: 0 },
  { n: 769, aOffset: 1, bOffset: 2, outOffset: 3 },
  { n: 4100, aOffset: 0, bOffset: 0, outOffset: 257 },
];

/** The host array `init` with `n` values of `vals` written at `offset`. */
function placed(init: Float32Array, vals: Float32Array, offset: number): Float32Array {
  const out = init.slice();
  out.set(vals, offset);
  return out;
}

Deno.test("add(), addInPlace() and copy() compile cleanly", async () => {
  if (await noGpu()) return;
  const k = (await testKernels())!;
  await assertCompilesCleanly(k, "add", ADD_SOURCE);
  await assertCompilesCleanly(k, "add_in_place", ADD_IN_PLACE_SOURCE);
  await assertCompilesCleanly(k, "copy", COPY_SOURCE);
});

for (const c of cases) {
  const label = `n=${c.n} offsets=${c.aOffset},${c.bOffset},${c.outOffset}`;

  Deno.test(`add() matches addRef at ${label}`, async () => {
    if (await noGpu()) return;
    const k = (await testKernels())!;
    const a = randomF32(c.aOffset + c.n + 2, c.n, -10, 10);
    const b = randomF32(c.bOffset + c.n + 2, c.n + 1, -10, 10);
    const init = new Float32Array(c.outOffset + c.n + 3).fill(42);
    const out = upload(k, init);
    await run(k, (pass) => add(k, pass, { a: upload(k, a), b: upload(k, b), out, ...c }));
    const want = addRef(a.subarray(c.aOffset, c.aOffset + c.n), b.subarray(c.bOffset, c.bOffset + c.n));
    assertClose(await readF32(k, out, init.length), placed(init, want, c.outOffset), EXACT);
  });

  Deno.test(`addInPlace() matches addRef at ${label}`, async () => {
    if (await noGpu()) return;
    const k = (await testKernels())!;
    const acc = randomF32(c.outOffset + c.n + 3, c.n + 2, -10, 10);
    const x = randomF32(c.aOffset + c.n + 1, c.n + 3, -10, 10);
    const accBuf = upload(k, acc);
    await run(k, (pass) =>
      addInPlace(k, pass, {
        acc: accBuf,
        x: upload(k, x),
        n: c.n,
        accOffset: c.outOffset,
        xOffset: c.aOffset,
      }));
    const want = addRef(acc.subarray(c.outOffset, c.outOffset + c.n), x.subarray(c.aOffset, c.aOffset + c.n));
    assertClose(await readF32(k, accBuf, acc.length), placed(acc, want, c.outOffset), EXACT);
  });

  Deno.test(`copy() matches copyRef at ${label}`, async () => {
    if (await noGpu()) return;
    const k = (await testKernels())!;
    const src = randomF32(c.aOffset + c.n + 2, c.n + 4);
    const dst = randomF32(c.outOffset + c.n + 3, c.n + 5, 5, 6);
    const dstBuf = upload(k, dst);
    const o = { n: c.n, srcOffset: c.aOffset, dstOffset: c.outOffset };
    await run(k, (pass) => copy(k, pass, { src: upload(k, src), dst: dstBuf, ...o }));
    assertClose(await readF32(k, dstBuf, dst.length), copyRef(src, dst, o), EXACT);
  });
}

Deno.test("copy() moves raw bits, NaN payloads included", async () => {
  if (await noGpu()) return;
  const k = (await testKernels())!;
  const bits = new Uint32Array([0x7fc00001, 0xffffffff, 0x80000000, 0x00000001, 0x3f800000]);
  const dst = scratch(k, bits.byteLength);
  await run(k, (pass) => copy(k, pass, { src: upload(k, bits), dst, n: bits.length }));
  const got = await readU32(k, dst, bits.length);
  for (let i = 0; i < bits.length; i++) {
    if (got[i] !== bits[i]) {
      throw new Error(`copy() word ${i}: got 0x${got[i].toString(16)}, want 0x${bits[i].toString(16)}`);
    }
  }
});

Deno.test("addInPlace() covers more than 65535 workgroups", async () => {
  if (await noGpu()) return;
  const k = (await testKernels())!;
  const n = 65535 * 256 + 300; // folded into two rows of workgroups
  const acc = randomF32(n, 1), x = randomF32(n, 2);
  const accBuf = upload(k, acc);
  await run(k, (pass) => addInPlace(k, pass, { acc: accBuf, x: upload(k, x), n }));
  assertClose(await readF32(k, accBuf, n), addRef(acc, x), EXACT);
});
