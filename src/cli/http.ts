// HTTP for the CLI: JSON requests to the Cellar API and errors that tell the user what to do.

export type JsonObject = Record<string, unknown>;

/** An error meant for the user: printed as is on stderr, exit code 1. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = "CliError";
  }
}

/** The API answered with an error status; `body` is its parsed JSON (or text). */
export class ApiError extends CliError {
  constructor(
    readonly status: number,
    readonly body: unknown,
    readonly url: string,
  ) {
    super(describeApiError(status, body));
    this.name = "ApiError";
  }
}

const isObject = (v: unknown): v is JsonObject => typeof v === "object" && v !== null && !Array.isArray(v);

/** The reference's error shapes (§4.1) turned into lines a person can act on. */
export function describeApiError(status: number, body: unknown): string {
  const error = isObject(body) && typeof body.error === "string" ? body.error : undefined;
  if (status === 422 && isObject(body) && isObject(body.errors)) {
    const lines = Object.entries(body.errors).flatMap(([field, messages]) =>
      (Array.isArray(messages) ? messages : [messages]).map((m) => `${field}: ${String(m)}`),
    );
    return lines.length ? lines.join("\n") : "invalid request";
  }
  if (status === 404) {
    const resource = isObject(body) && typeof body.resource === "string" ? body.resource : undefined;
    if (resource) return `${resource} not found`;
    // The server predates this CLI (or is not Cellar): say so rather than "not found".
    if (error?.startsWith("no route for ")) return `this API does not offer that yet (${error})`;
    return error ?? "resource not found";
  }
  if (status === 401) return `${error ?? "not authenticated"}\nrun "cellar login" to log in again`;
  if (status === 403) return error ?? "forbidden";
  if (error) return error;
  if (typeof body === "string" && body.trim()) return `HTTP ${status}: ${body.trim().slice(0, 300)}`;
  return `HTTP ${status}`;
}

export interface Response {
  status: number;
  headers: Headers;
  json: unknown;
}

export interface RequestOptions {
  method: string;
  url: string;
  /** `Authorization` header value (Bearer or Basic). */
  authorization?: string;
  body?: unknown;
  timeoutMs?: number;
}

const REQUEST_TIMEOUT_MS = 30_000;
const MAX_RATE_LIMIT_WAIT_S = 10;

function networkMessage(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  if (cause?.code) return cause.code;
  if ((err as Error).name === "TimeoutError") return "no answer in time";
  return cause?.message ?? (err as Error).message;
}

async function once(opts: RequestOptions): Promise<Response> {
  const headers: Record<string, string> = { accept: "application/json" };
  if (opts.authorization) headers.authorization = opts.authorization;
  let body: string | undefined;
  if (opts.body !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(opts.body);
  }
  let res: globalThis.Response;
  try {
    res = await fetch(opts.url, {
      method: opts.method,
      headers,
      ...(body !== undefined ? { body } : {}),
      signal: AbortSignal.timeout(opts.timeoutMs ?? REQUEST_TIMEOUT_MS),
    });
  } catch (err) {
    throw new CliError(`cannot reach ${opts.method} ${opts.url}: ${networkMessage(err)}`);
  }
  const text = await res.text();
  let json: unknown = null;
  if (text) {
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
  }
  return { status: res.status, headers: res.headers, json };
}

/**
 * Sends one JSON request. Errors (status >= 400) throw ApiError. A 429 is retried after
 * the server's Retry-After when that is short, so that `--wait` loops survive the limit.
 */
export async function request(opts: RequestOptions): Promise<Response> {
  for (let attempt = 0; ; attempt++) {
    const res = await once(opts);
    if (res.status === 429 && attempt < 3) {
      const wait = Number(res.headers.get("retry-after") ?? "1");
      if (Number.isFinite(wait) && wait <= MAX_RATE_LIMIT_WAIT_S) {
        await new Promise((r) => setTimeout(r, Math.max(wait, 1) * 1000));
        continue;
      }
    }
    if (res.status >= 400) throw new ApiError(res.status, res.json, opts.url);
    return res;
  }
}

/** A field of a rooted response (`{"app": {...}}`), checked to be an object. */
export function rooted(res: Response, key: string): JsonObject {
  const inner = isObject(res.json) ? res.json[key] : undefined;
  if (!isObject(inner)) throw new CliError(`unexpected answer from the API: no "${key}" object`);
  return inner;
}

/** A list field of a rooted response (`{"apps": [...]}`). */
export function rootedList(res: Response, key: string): JsonObject[] {
  const inner = isObject(res.json) ? res.json[key] : undefined;
  if (!Array.isArray(inner)) throw new CliError(`unexpected answer from the API: no "${key}" list`);
  return inner.filter(isObject);
}

export { isObject };
