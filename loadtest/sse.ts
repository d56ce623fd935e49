// An incremental text/event-stream parser following the WHATWG HTML "event stream interpretation" rules:
// lines end in CRLF, LF or CR (a CR at the end of one chunk and an LF at the start of the next are one line
// end); a blank line dispatches the event; `:` starts a comment; `data` lines join with "\n"; one space after
// the colon is dropped; an event without data is not dispatched; an unterminated event at the end of the
// stream is discarded. Bytes go through one streaming TextDecoder, so a UTF-8 character split across network
// chunks arrives whole.

export interface SseEvent {
  /** The `event:` field, "message" when absent. */
  event: string;
  data: string;
  /** The last `id:` seen so far in the stream, "" when none. */
  id: string;
}

export class SseParser {
  #decoder = new TextDecoder("utf-8");
  #buffer = "";
  #skipLf = false;
  #data: string[] = [];
  #event = "";
  #id = "";
  /** Comment lines (`: keep-alive`) seen. */
  comments = 0;

  /** Feeds bytes or text; returns the events completed by it. */
  push(chunk: Uint8Array | string): SseEvent[] {
    let text = typeof chunk === "string" ? chunk : this.#decoder.decode(chunk, { stream: true });
    if (this.#skipLf) {
      this.#skipLf = false;
      if (text.startsWith("\n")) text = text.slice(1);
    }
    this.#buffer += text;
    const out: SseEvent[] = [];
    let start = 0;
    for (let i = 0; i < this.#buffer.length; i++) {
      const c = this.#buffer.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      this.#line(this.#buffer.slice(start, i), out);
      if (c === 13) {
        if (i + 1 === this.#buffer.length) this.#skipLf = true;
        else if (this.#buffer.charCodeAt(i + 1) === 10) i++;
      }
      start = i + 1;
    }
    this.#buffer = this.#buffer.slice(start);
    return out;
  }

  /** Ends the stream: flushes the decoder; an event not closed by a blank line is dropped (per the spec). */
  end(): SseEvent[] {
    const tail = this.#decoder.decode();
    const out = tail ? this.push(tail) : [];
    this.#buffer = "";
    this.#data = [];
    this.#event = "";
    return out;
  }

  /** True when the stream has bytes of an event that no blank line has closed yet. */
  get pending(): boolean {
    return this.#buffer !== "" || this.#data.length > 0;
  }

  #line(line: string, out: SseEvent[]): void {
    if (line === "") {
      if (this.#data.length > 0) {
        out.push({ event: this.#event || "message", data: this.#data.join("\n"), id: this.#id });
      }
      this.#data = [];
      this.#event = "";
      return;
    }
    if (line.startsWith(":")) {
      this.comments++;
      return;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.#data.push(value);
    else if (field === "event") this.#event = value;
    else if (field === "id" && !value.includes("\0")) this.#id = value;
    // "retry" and unknown fields are ignored.
  }
}
