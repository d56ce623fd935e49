// The server's one error type and the one table that maps each kind of failure to an HTTP status, an OpenAI
// error `type` and a default `code` (docs/API.md §7). Routes throw ApiError; app.onError renders it.

import type { ZodError } from "zod";

export type ErrorKind =
  | "invalid_request"
  | "unauthorized"
  | "model_not_found"
  | "unknown_url"
  | "too_large"
  | "unsupported_media_type"
  | "rate_limited"
  | "internal"
  | "unavailable";

interface ErrorRow {
  status: 400 | 401 | 404 | 413 | 415 | 429 | 500 | 503;
  type: string;
  code: string | null;
}

const ERROR_TABLE: Record<ErrorKind, ErrorRow> = {
  invalid_request: { status: 400, type: "invalid_request_error", code: null },
  unauthorized: { status: 401, type: "invalid_request_error", code: "invalid_api_key" },
  model_not_found: { status: 404, type: "invalid_request_error", code: "model_not_found" },
  unknown_url: { status: 404, type: "invalid_request_error", code: "unknown_url" },
  too_large: { status: 413, type: "invalid_request_error", code: "request_too_large" },
  unsupported_media_type: { status: 415, type: "invalid_request_error", code: "unsupported_media_type" },
  rate_limited: { status: 429, type: "rate_limit_error", code: "rate_limit_exceeded" },
  internal: { status: 500, type: "server_error", code: null },
  unavailable: { status: 503, type: "server_error", code: "service_unavailable" },
};

export interface ApiErrorOptions {
  /** Offending request field, e.g. "messages[2].role". */
  param?: string | null;
  /** Overrides the table's code, e.g. "context_length_exceeded" or "model_loading". */
  code?: string | null;
  /** Seconds a client should wait before retrying (429, 503). */
  retryAfterS?: number;
}

/** The OpenAI error object, as sent in a body or an in-stream error event. */
export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

export class ApiError extends Error {
  readonly kind: ErrorKind;
  readonly status: ErrorRow["status"];
  readonly type: string;
  readonly param: string | null;
  readonly code: string | null;
  readonly retryAfterS: number | undefined;

  constructor(kind: ErrorKind, message: string, options: ApiErrorOptions = {}) {
    super(clipMessage(message));
    this.name = "ApiError";
    const row = ERROR_TABLE[kind];
    this.kind = kind;
    this.status = row.status;
    this.type = row.type;
    this.param = options.param ?? null;
    this.code = options.code === undefined ? row.code : options.code;
    this.retryAfterS = options.retryAfterS;
  }

  body(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }

  /** Retry hints the OpenAI SDKs read: `retry-after-ms` first, then `retry-after` (docs/API.md §7). */
  headers(): Record<string, string> {
    const headers: Record<string, string> = {};
    if (this.retryAfterS !== undefined) {
      headers["retry-after"] = String(Math.max(1, Math.ceil(this.retryAfterS)));
      headers["retry-after-ms"] = String(Math.max(1, Math.round(this.retryAfterS * 1000)));
    }
    if (this.status === 429 || this.status === 503) headers["x-should-retry"] = "true";
    return headers;
  }

  toResponse(extraHeaders: Record<string, string> = {}): Response {
    return new Response(JSON.stringify(this.body()), {
      status: this.status,
      headers: { "content-type": "application/json", ...this.headers(), ...extraHeaders },
    });
  }
}

/** A quoted value longer than this is cut in error messages; a whole message, at MAX_MESSAGE. */
const MAX_QUOTED = 80;
const MAX_MESSAGE = 2000;

/**
 * Error messages quote what the client sent; a 1 MiB `model` must not come back whole. Each quoted run over
 * MAX_QUOTED characters keeps its start and says how long it was; the message is capped at MAX_MESSAGE.
 */
export function clipMessage(message: string): string {
  const clipped = message.replace(
    new RegExp(`"([^"]{${MAX_QUOTED + 1},})"`, "g"),
    (_, inner: string) => `"${inner.slice(0, MAX_QUOTED)}..." (${inner.length} characters)`,
  );
  if (clipped.length <= MAX_MESSAGE) return clipped;
  return `${clipped.slice(0, MAX_MESSAGE)}... (${clipped.length - MAX_MESSAGE} more characters)`;
}

/** Turns anything thrown into an ApiError; unknown errors become a 500 with a generic message. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  return new ApiError("internal", `Internal server error: ${detail}`);
}

/** Writes a zod issue path the way OpenAI names params: `messages[0].content[1].type`. */
export function formatParam(path: readonly PropertyKey[]): string {
  let out = "";
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`;
    else out += out === "" ? String(key) : `.${String(key)}`;
  }
  return out;
}

type Issue = ZodError["issues"][number];

/**
 * For a failed union, the branch that got furthest (an issue below the root, or not a type
 * mismatch) explains the failure better than "Invalid input"; returns the issue and its full path.
 */
function deepestIssue(issue: Issue, prefix: readonly PropertyKey[]): { issue: Issue; path: PropertyKey[] } {
  const path = [...prefix, ...issue.path];
  if (issue.code !== "invalid_union") return { issue, path };
  const informative = issue.errors.filter((branch) =>
    branch.some((i) => i.path.length > 0 || i.code !== "invalid_type")
  );
  if (informative.length !== 1) return { issue, path };
  return deepestIssue(informative[0][0], path);
}

/** The first zod issue as a 400 naming the field (docs/API.md §7: `param` = offending field path). */
export function fromZodError(err: ZodError): ApiError {
  const { issue, path } = deepestIssue(err.issues[0], []);
  const param = formatParam(path);
  const detail = issue.message.replace(/^Invalid input: /, "");
  const message = param === ""
    ? `Invalid request body: ${detail}`
    : `Invalid value for "${param}": ${detail}`;
  return new ApiError("invalid_request", message, { param: param === "" ? null : param });
}
