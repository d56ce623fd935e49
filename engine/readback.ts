// Reading GPU buffers back to the host through a pool of mappable buffers, reused across rounds (creating
// one per readback costs more than the copy). Deno's mapAsync blocks the thread until the queue is idle,
// which is why the engine runs in a Worker and reads a whole decode round back at once.
export class Readback {
  readonly #device: GPUDevice;
  readonly #pool: GPUBuffer[] = [];

  constructor(device: GPUDevice) {
    this.#device = device;
  }

  /** A MAP_READ buffer of at least `bytes`: from the pool, else a new one (a power of two, >= 256). */
  take(bytes: number): GPUBuffer {
    const i = this.#pool.findIndex((b) => b.size >= bytes);
    if (i >= 0) return this.#pool.splice(i, 1)[0];
    return this.#device.createBuffer({
      size: Math.max(256, 2 ** Math.ceil(Math.log2(bytes))),
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
  }

  /**
   * Waits until the submitted work has filled `rb`, copies its first `bytes` out and returns it to the
   * pool. `mappedAt` is performance.now() when the map resolved. `whenIdle` runs right after mapAsync's
   * call returns: in Deno that call blocks until the queue is idle, and the promise settles ~10 ms later.
   */
  async collect(
    rb: GPUBuffer,
    bytes: number,
    whenIdle?: () => void,
  ): Promise<{ data: ArrayBuffer; mappedAt: number }> {
    const mapped = rb.mapAsync(GPUMapMode.READ, 0, bytes);
    whenIdle?.();
    await mapped;
    const mappedAt = performance.now();
    const data = rb.getMappedRange(0, bytes).slice(0);
    rb.unmap();
    this.#pool.push(rb);
    return { data, mappedAt };
  }

  /** The first `bytes` of `buf`, after everything submitted before. */
  async read(buf: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
    const rb = this.take(bytes);
    const enc = this.#device.createCommandEncoder();
    enc.copyBufferToBuffer(buf, 0, rb, 0, bytes);
    this.#device.queue.submit([enc.finish()]);
    return (await this.collect(rb, bytes)).data;
  }

  /** The u32 words at `slots` of each buffer. */
  async readWords(reqs: { buf: GPUBuffer; slots: number[] }[]): Promise<Uint32Array[]> {
    const out: Uint32Array[] = [];
    for (const r of reqs) {
      const words = new Uint32Array(await this.read(r.buf, (Math.max(...r.slots) + 1) * 4));
      out.push(Uint32Array.from(r.slots, (i) => words[i]));
    }
    return out;
  }
}
