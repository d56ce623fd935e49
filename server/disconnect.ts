// Notices clients that hung up on a request still running. Deno.serve (2.9.6) aborts `request.signal` on a
// disconnect only when the whole request arrived in one read with a small body (under ~480 bytes); for an
// ordinary chat request hyper does not read the socket again until the response is written, so a client
// that timed out kept its sequence generating to max_tokens. Streaming responses notice through the failed
// write; for the rest, this watch reads the kernel's TCP table (/proc/net/tcp, tcp6) while such requests
// run and aborts a request once its connection is no longer ESTABLISHED (CLOSE_WAIT: the peer sent FIN).
// Without /proc (not Linux) it does nothing, and requests end as before.

/** How often the TCP table is read while requests are watched: about one decode round. */
export const WATCH_INTERVAL_MS = 50;

const TCP_TABLES = ["/proc/net/tcp", "/proc/net/tcp6"];
const ESTABLISHED = "01";

interface Watched {
  remotePort: number;
  controller: AbortController;
}

/** Connection state by remote port, for connections to `localPort`: true when one is ESTABLISHED. */
async function readTable(localPort: number): Promise<Map<number, boolean> | null> {
  const alive = new Map<number, boolean>();
  let readAny = false;
  for (const path of TCP_TABLES) {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch {
      continue;
    }
    readAny = true;
    // "  sl  local_address rem_address   st ...": addresses are HEXIP:HEXPORT.
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 4) continue;
      if (parseInt(f[1].slice(f[1].lastIndexOf(":") + 1), 16) !== localPort) continue;
      const remotePort = parseInt(f[2].slice(f[2].lastIndexOf(":") + 1), 16);
      alive.set(remotePort, (alive.get(remotePort) ?? false) || f[3] === ESTABLISHED);
    }
  }
  return readAny ? alive : null;
}

export class DisconnectWatch {
  readonly #localPort: number;
  readonly #intervalMs: number;
  readonly #watched = new Set<Watched>();
  #timer: ReturnType<typeof setTimeout> | null = null;
  #disabled = false;

  constructor(localPort: number, intervalMs = WATCH_INTERVAL_MS) {
    this.#localPort = localPort;
    this.#intervalMs = intervalMs;
  }

  /**
   * A signal that aborts when the connection from `remote` closes, and a function that stops watching it
   * (call it when the response has been handed over).
   */
  watch(remote: Deno.NetAddr): { signal: AbortSignal; done: () => void } {
    const w: Watched = { remotePort: remote.port, controller: new AbortController() };
    if (this.#disabled) return { signal: w.controller.signal, done: () => {} };
    this.#watched.add(w);
    this.#timer ??= setTimeout(() => this.#poll(), this.#intervalMs);
    return { signal: w.controller.signal, done: () => this.#watched.delete(w) };
  }

  async #poll(): Promise<void> {
    const table = await readTable(this.#localPort);
    if (table === null) {
      this.#disabled = true;
      this.#watched.clear();
    }
    for (const w of this.#watched) {
      // A port missing from the table is a connection already gone.
      if (table?.get(w.remotePort) !== true) {
        this.#watched.delete(w);
        w.controller.abort(new DOMException("The client closed the connection", "AbortError"));
      }
    }
    this.#timer = this.#watched.size > 0 ? setTimeout(() => this.#poll(), this.#intervalMs) : null;
  }

  /** Stops polling (the server is closing). */
  close(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#watched.clear();
  }
}
