import assert from "node:assert/strict";
import { join } from "node:path";
import {
  convertToF16,
  f16Overflows,
  f32BitsToF16,
  MAX_HEADER_BYTES,
  openSafetensors,
} from "./safetensors.ts";
import { fixturesDir, noFixtures } from "../test/support/mod.ts";

/** 8-byte LE length + header text + data, with an optional lie in the length field. */
function build(header: unknown, data: Uint8Array, headerLen?: bigint): Uint8Array {
  const text = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + text.length + data.length);
  new DataView(out.buffer).setBigUint64(0, headerLen ?? BigInt(text.length), true);
  out.set(text, 8);
  out.set(data, 8 + text.length);
  return out;
}

async function withFile(bytes: Uint8Array, fn: (path: string) => Promise<void>) {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "model.safetensors");
    await Deno.writeFile(path, bytes);
    await fn(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function ramp(n: number, seed = 0): Uint8Array {
  const a = new Uint8Array(n);
  for (let i = 0; i < n; i++) a[i] = (i * 31 + seed * 7 + (i >> 8)) & 255;
  return a;
}

async function collect(it: AsyncIterable<{ offset: number; bytes: Uint8Array }>, total: number) {
  const out = new Uint8Array(total);
  let expected = 0;
  for await (const { offset, bytes } of it) {
    assert.equal(offset, expected);
    out.set(bytes, offset);
    expected += bytes.byteLength;
  }
  assert.equal(expected, total);
  return out;
}

// Two tensors laid out back to back: a F16 [3, 5] (30 bytes) and a I32 [7] (28 bytes).
const goodHeader = {
  __metadata__: { format: "pt" },
  b: { dtype: "I32", shape: [7], data_offsets: [30, 58] },
  a: { dtype: "F16", shape: [3, 5], data_offsets: [0, 30] },
};

Deno.test("openSafetensors() parses tensors and metadata, read() returns each tensor's bytes", async () => {
  const data = ramp(58);
  await withFile(build(goodHeader, data), async (path) => {
    const f = await openSafetensors(path);
    try {
      assert.deepEqual(f.metadata, { format: "pt" });
      assert.deepEqual([...f.tensors.keys()].sort(), ["a", "b"]);
      const a = f.tensors.get("a")!;
      const headerLen = JSON.stringify(goodHeader).length;
      assert.deepEqual(a, {
        name: "a",
        dtype: "F16",
        shape: [3, 5],
        byteLength: 30,
        fileOffset: 8 + headerLen,
      });
      assert.equal(f.tensors.get("b")!.fileOffset, 8 + headerLen + 30);
      assert.deepEqual(await f.read("a"), data.subarray(0, 30));
      assert.deepEqual(await f.read("b"), data.subarray(30, 58));
      await assert.rejects(
        () => f.read("c"),
        /Cannot read tensor "c" from ".*model.safetensors": no such tensor/,
      );
    } finally {
      f.close();
    }
  });
});

Deno.test("readChunks() yields the tensor in order through one reused buffer of at most chunkBytes", async () => {
  const n = 4099;
  const data = ramp(n + 10, 3);
  const header = { big: { dtype: "U8", shape: [n], data_offsets: [10, 10 + n] } };
  await withFile(build(header, data), async (path) => {
    const f = await openSafetensors(path);
    try {
      for (const chunk of [1, 7, 137, 769, 1024, 4099, 1 << 20]) {
        let buffer: ArrayBufferLike | null = null;
        let count = 0;
        for await (const { bytes } of f.readChunks("big", chunk)) {
          assert.ok(bytes.byteLength <= chunk, `chunk of ${bytes.byteLength} bytes > ${chunk}`);
          assert.ok(bytes.buffer.byteLength <= chunk, "backing buffer larger than chunkBytes");
          buffer ??= bytes.buffer;
          assert.equal(bytes.buffer, buffer, "buffer was not reused");
          count++;
        }
        assert.equal(count, Math.ceil(n / chunk));
        assert.deepEqual(await collect(f.readChunks("big", chunk), n), data.subarray(10, 10 + n));
      }
      await assert.rejects(async () => {
        for await (const _ of f.readChunks("big", 0)) { /* nothing */ }
      }, /chunkBytes must be a positive integer, got 0/);
    } finally {
      f.close();
    }
  });
});

Deno.test("readChunks() iterators interleaved with each other and read() see their own data", async () => {
  const data = ramp(58, 5);
  await withFile(build(goodHeader, data), async (path) => {
    const f = await openSafetensors(path);
    try {
      const ia = f.readChunks("a", 4)[Symbol.asyncIterator]();
      const ib = f.readChunks("b", 4)[Symbol.asyncIterator]();
      const gotA: number[] = [], gotB: number[] = [];
      for (;;) {
        const [ra, rb, whole] = await Promise.all([ia.next(), ib.next(), f.read("b")]);
        assert.deepEqual(whole, data.subarray(30, 58));
        if (!ra.done) gotA.push(...ra.value.bytes);
        if (!rb.done) gotB.push(...rb.value.bytes);
        if (ra.done && rb.done) break;
      }
      assert.deepEqual(gotA, [...data.subarray(0, 30)]);
      assert.deepEqual(gotB, [...data.subarray(30, 58)]);
    } finally {
      f.close();
    }
  });
});

Deno.test("read() after close() fails naming the file", async () => {
  await withFile(build(goodHeader, ramp(58)), async (path) => {
    const f = await openSafetensors(path);
    f.close();
    await assert.rejects(() => f.read("a"), /Cannot read ".*model.safetensors": the file is closed/);
  });
});

Deno.test("openSafetensors() accepts zero-size tensors and scalars", async () => {
  const header = {
    empty: { dtype: "F32", shape: [0, 4], data_offsets: [8, 8] },
    scalar: { dtype: "I64", shape: [], data_offsets: [0, 8] },
  };
  await withFile(build(header, ramp(8)), async (path) => {
    const f = await openSafetensors(path);
    try {
      assert.equal(f.tensors.get("empty")!.byteLength, 0);
      assert.equal((await f.read("empty")).byteLength, 0);
      assert.equal(await collect(f.readChunks("empty", 16), 0).then((b) => b.byteLength), 0);
      assert.equal(f.tensors.get("scalar")!.byteLength, 8);
    } finally {
      f.close();
    }
  });
});

// Each corrupt file must be rejected with a message naming the file, and the tensor when there is one.
const corrupt: { what: string; bytes: () => Uint8Array; message: RegExp }[] = [
  {
    what: "a file shorter than 8 bytes",
    bytes: () => new Uint8Array(5),
    message: /the file is 5 bytes, expected at least 8/,
  },
  {
    what: "a header length beyond 100 MB",
    bytes: () => build(goodHeader, ramp(58), 1n << 40n),
    message: new RegExp(`header length is ${1n << 40n} bytes, expected at most ${MAX_HEADER_BYTES}`),
  },
  {
    what: "a header length beyond the file",
    bytes: () => build("{}", new Uint8Array(0), 500n),
    message: /header length is 500 bytes but only 2 bytes follow the length field/,
  },
  {
    what: "a header that is not JSON",
    bytes: () => build('{"a": {"dtype": "F16",', ramp(4)),
    message: /the header is not valid JSON/,
  },
  {
    what: "a header that is a JSON array",
    bytes: () => build([1, 2], ramp(4)),
    message: /the header must be a JSON object, got \[1,2\]/,
  },
  {
    what: "an unknown dtype",
    bytes: () => build({ w: { dtype: "F4", shape: [2], data_offsets: [0, 1] } }, ramp(4)),
    message: /tensor "w" has dtype "F4", expected one of F64, F32, F16, BF16/,
  },
  {
    what: "a negative dimension",
    bytes: () => build({ w: { dtype: "U8", shape: [-1], data_offsets: [0, 1] } }, ramp(4)),
    message: /tensor "w" has shape \[-1\], expected an array of non-negative integers/,
  },
  {
    what: "offsets past the end of the file",
    bytes: () => build({ w: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, ramp(12)),
    message: /tensor "w" has data_offsets \[0, 16\] past the end of the data section, which holds 12 bytes/,
  },
  {
    what: "begin after end",
    bytes: () => build({ w: { dtype: "U8", shape: [0], data_offsets: [8, 4] } }, ramp(12)),
    message: /tensor "w" has data_offsets \[8, 4\], expected begin <= end/,
  },
  {
    what: "a byte length that disagrees with the shape",
    bytes: () =>
      build({ "lm_head.weight": { dtype: "F16", shape: [4096, 1024], data_offsets: [0, 100] } }, ramp(100)),
    message: /tensor "lm_head.weight" needs 8388608 bytes for F16 \[4096, 1024\], its data_offsets span 100/,
  },
  {
    what: "overlapping tensors",
    bytes: () =>
      build({
        x: { dtype: "F32", shape: [4], data_offsets: [0, 16] },
        y: { dtype: "F32", shape: [2], data_offsets: [12, 20] },
      }, ramp(20)),
    message: /tensor "y" data_offsets \[12, 20\] overlap tensor "x" \[0, 16\]/,
  },
  {
    what: "malformed data_offsets",
    bytes: () => build({ w: { dtype: "U8", shape: [1], data_offsets: [0] } }, ramp(4)),
    message: /tensor "w" has data_offsets \[0\], expected \[begin, end\]/,
  },
  {
    what: "non-string metadata",
    bytes: () => build({ __metadata__: { step: 3 } }, ramp(0)),
    message: /"__metadata__" value "step" must be a string, got 3/,
  },
];

for (const c of corrupt) {
  Deno.test(`openSafetensors() rejects ${c.what}`, async () => {
    await withFile(c.bytes(), async (path) => {
      await assert.rejects(
        () => openSafetensors(path),
        (e: Error) => {
          assert.ok(e.message.startsWith(`Cannot read "${path}": `), e.message);
          assert.match(e.message, c.message);
          return true;
        },
      );
    });
  });
}

Deno.test("openSafetensors() reads the fixture files like Python's struct + json + hashlib do", {
  ignore: noFixtures(),
}, async () => {
  const dir = fixturesDir()!;
  // Expected values were computed with a separate Python reader of the same files.
  const f = await openSafetensors(join(dir, "llama31-style-fp16/model.safetensors"));
  try {
    assert.equal(f.tensors.size, 57);
    assert.deepEqual(f.metadata, { format: "pt" });
    const emb = f.tensors.get("model.embed_tokens.weight")!;
    assert.equal(emb.dtype, "F16");
    assert.deepEqual(emb.shape, [8192, 256]);
    const bytes = await collect(f.readChunks(emb.name, 1 << 20), emb.byteLength);
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    assert.equal(
      [...digest].map((b) => b.toString(16).padStart(2, "0")).join(""),
      "45beb0a8b685beca43e231dae5f120b8abf8cebf55a748010eac294de138c7e2",
    );
    const norm = new Float16Array((await f.read("model.norm.weight")).buffer);
    assert.deepEqual([...norm.subarray(0, 4)], [1.52734375, 1.5302734375, 1.4921875, 1.4970703125]);
  } finally {
    f.close();
  }
});

// Float16Array / Math.f16round (V8) are an independent round-to-nearest-even f16 conversion.
function f16Bits(x: number): number {
  return new Uint16Array(new Float16Array([x]).buffer)[0];
}

function f32Bits(x: number): number {
  return new Uint32Array(new Float32Array([x]).buffer)[0];
}

Deno.test("f32BitsToF16() rounds to nearest even at every edge of the f16 range", () => {
  const cases = [
    0,
    -0,
    1,
    -1,
    0.1,
    1 / 3,
    65504,
    65519.99,
    65520,
    -65520,
    1e10,
    Infinity,
    -Infinity,
    2 ** -14,
    2 ** -14 * (1 - 2 ** -11),
    2 ** -24,
    2 ** -25,
    2 ** -25 * 1.0001,
    3 * 2 ** -25,
    5 * 2 ** -25,
    2 ** -26,
    1e-30,
    1 + 2 ** -11,
    1 + 3 * 2 ** -11,
    2049,
    2051,
    4097,
  ];
  for (const x of cases) {
    const f = Math.fround(x);
    assert.equal(f32BitsToF16(f32Bits(f)), f16Bits(f), `at ${x}`);
  }
  const nan = f32BitsToF16(f32Bits(NaN));
  assert.ok((nan & 0x7c00) === 0x7c00 && (nan & 0x3ff) !== 0, "NaN stays NaN");
});

Deno.test("f32BitsToF16() agrees with Float16Array on 200k random f32 bit patterns", () => {
  let s = 12345;
  const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0);
  const bits = new Uint32Array(1);
  const f = new Float32Array(bits.buffer);
  for (let i = 0; i < 200_000; i++) {
    bits[0] = next();
    if (Number.isNaN(f[0])) continue;
    assert.equal(f32BitsToF16(bits[0]), f16Bits(f[0]), `at bits 0x${bits[0].toString(16)}`);
  }
});

Deno.test("convertToF16() maps every BF16 value like torch .half(): exact, rounded subnormals, ±inf beyond", () => {
  const all = new Uint16Array(65536);
  for (let i = 0; i < 65536; i++) all[i] = i;
  const out = convertToF16("BF16", new Uint8Array(all.buffer));
  const asF32 = new Float32Array(1);
  const asU32 = new Uint32Array(asF32.buffer);
  for (let b = 0; b < 65536; b++) {
    asU32[0] = b << 16;
    const v = asF32[0];
    if (Number.isNaN(v)) {
      assert.ok((out[b] & 0x7c00) === 0x7c00 && (out[b] & 0x3ff) !== 0, `NaN at 0x${b.toString(16)}`);
    } else {
      assert.equal(out[b], f16Bits(v), `at bf16 0x${b.toString(16)} = ${v}`);
    }
  }
  // 65536 = 2^16 is a bf16 value above f16's max: it overflows to +inf.
  assert.equal(out[f32Bits(65536) >>> 16], 0x7c00);
});

Deno.test("f16Overflows() counts finite bf16/f32 values that became ±inf, not the infinities", () => {
  const f32 = new Float32Array([1, 70000, -1e6, Infinity, -65504, 65520]);
  const bytes = new Uint8Array(f32.buffer);
  assert.deepEqual(f16Overflows("F32", bytes, convertToF16("F32", bytes)), { count: 3, max: 1e6 });
  // bf16 is the top half of an f32: 2^16 and -2^20 overflow, +inf and 1.5 do not.
  const bf16 = new Uint16Array([0x3fc0, 0x4780, 0xc980, 0x7f80]);
  const raw = new Uint8Array(bf16.buffer);
  assert.deepEqual(f16Overflows("BF16", raw, convertToF16("BF16", raw)), { count: 2, max: 2 ** 20 });
  const ok = new Uint8Array(new Float32Array([0.5, -3]).buffer);
  assert.deepEqual(f16Overflows("F32", ok, convertToF16("F32", ok)), { count: 0, max: 0 });
});

Deno.test("convertToF16() converts F32 and passes F16 through from unaligned bytes", () => {
  const values = [0.5, -2.25, 70000, 1e-8, 3.14159];
  const bytes = new Uint8Array(1 + 4 * values.length).subarray(1); // byteOffset 1: unaligned
  const dv = new DataView(bytes.buffer, bytes.byteOffset);
  values.forEach((v, i) => dv.setFloat32(4 * i, v, true));
  assert.deepEqual([...convertToF16("F32", bytes)], values.map((v) => f16Bits(Math.fround(v))));

  const half = new Uint8Array(7).subarray(1);
  half.set([0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b]);
  assert.deepEqual([...convertToF16("F16", half)], [0x3c00, 0xc000, 0x7bff]);

  assert.throws(
    () => convertToF16("I32", new Uint8Array(4)),
    /Cannot convert I32 to F16: expected F16, BF16 or F32/,
  );
  assert.throws(() => convertToF16("F32", new Uint8Array(6)), /6 bytes is not a multiple of 4/);
});
