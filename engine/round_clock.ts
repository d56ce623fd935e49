// GPU timestamps around each decode round's compute pass, read back with the round's tokens: the GPU's busy
// span per round, from which the benchmarks take the GPU's idle fraction during decode (issue 9: the
// time between one round's end and the next round's start, which host work and Deno's mapAsync cause).
// Needs the `timestamp-query` feature; the engine keeps none when the device lacks it or it is not asked for.

/** Rounds whose timestamps can be outstanding at once (the engine keeps two in flight). */
const RING = 16;
/** resolveQuerySet writes at offsets that are multiples of 256. */
const SLOT_BYTES = 256;
/** Bytes a round's readback carries after its tokens: two u64 timestamps. */
export const ROUND_CLOCK_BYTES = 16;

/** One round's pass on the GPU's clock, in nanoseconds. */
export interface GpuSpan {
  startNs: number;
  endNs: number;
}

export class RoundClock {
  readonly #query: GPUQuerySet;
  readonly #resolve: GPUBuffer;
  #next = 0;

  constructor(device: GPUDevice) {
    if (!device.features.has("timestamp-query")) {
      throw new Error("RoundClock needs the timestamp-query feature");
    }
    this.#query = device.createQuerySet({ type: "timestamp", count: 2 * RING, label: "round-clock" });
    this.#resolve = device.createBuffer({
      label: "round-clock-resolve",
      size: RING * SLOT_BYTES,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
  }

  /** A slot for the next round and the timestampWrites of its compute pass. */
  begin(): { slot: number; timestampWrites: GPUComputePassTimestampWrites } {
    const slot = this.#next;
    this.#next = (this.#next + 1) % RING;
    return {
      slot,
      timestampWrites: {
        querySet: this.#query,
        beginningOfPassWriteIndex: 2 * slot,
        endOfPassWriteIndex: 2 * slot + 1,
      },
    };
  }

  /** After the pass: copies the slot's two timestamps to `dst` at `offset` (ROUND_CLOCK_BYTES). */
  finish(enc: GPUCommandEncoder, slot: number, dst: GPUBuffer, offset: number): void {
    enc.resolveQuerySet(this.#query, 2 * slot, 2, this.#resolve, slot * SLOT_BYTES);
    enc.copyBufferToBuffer(this.#resolve, slot * SLOT_BYTES, dst, offset, ROUND_CLOCK_BYTES);
  }

  /** The span in a readback's bytes at `offset`. */
  static read(data: ArrayBuffer, offset: number): GpuSpan {
    const ts = new BigUint64Array(data.slice(offset, offset + ROUND_CLOCK_BYTES));
    return { startNs: Number(ts[0]), endNs: Number(ts[1]) };
  }

  destroy(): void {
    this.#query.destroy();
    this.#resolve.destroy();
  }
}

/**
 * The GPU's idle fraction over consecutive rounds: 1 - (sum of the rounds' busy spans) / (first start to
 * last end). Rounds run in submission order on one queue, so their spans do not overlap; null when fewer
 * than two rounds or a zero-length window.
 */
export function idleFraction(spans: GpuSpan[]): number | null {
  if (spans.length < 2) return null;
  const start = Math.min(...spans.map((s) => s.startNs));
  const end = Math.max(...spans.map((s) => s.endNs));
  if (!(end > start)) return null;
  const busy = spans.reduce((a, s) => a + Math.max(0, s.endNs - s.startNs), 0);
  return Math.max(0, 1 - busy / (end - start));
}
