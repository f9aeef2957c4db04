// Reading request bodies: size limit, JSON syntax, and typed fields with clear errors.
import type { Context } from "hono";
import { BadRequestError, CellarError, ValidationError } from "../domain/errors.ts";

export const MAX_BODY_BYTES = 64 * 1024;

export type Json = Record<string, unknown>;

/** Parses a JSON object body of at most `maxBytes`; an empty body is `{}`. */
export async function readJson(c: Context, maxBytes = MAX_BODY_BYTES): Promise<Json> {
  const declared = Number(c.req.header("content-length") ?? "0");
  if (declared > maxBytes) throw tooLarge(maxBytes);
  const buf = await c.req.arrayBuffer();
  if (buf.byteLength > maxBytes) throw tooLarge(maxBytes);
  const text = new TextDecoder().decode(buf).trim();
  if (text === "") return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new BadRequestError(`malformed JSON body: ${(err as Error).message}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new BadRequestError("the JSON body must be an object");
  }
  return parsed as Json;
}

function tooLarge(maxBytes: number): CellarError {
  return new CellarError("payload_too_large", `request body larger than ${maxBytes} bytes`);
}

/** The rooted object (`{"addon": {...}}`); clients that send it unwrapped are accepted too. */
export function root(body: Json, key: string, unwrappedAllowed = true): Json {
  const inner = body[key];
  if (inner === undefined) {
    if (unwrappedAllowed) return body;
    throw ValidationError.field(key, "is required: send a JSON object under this key");
  }
  if (typeof inner !== "object" || inner === null || Array.isArray(inner)) {
    throw ValidationError.field(key, "must be a JSON object");
  }
  return inner as Json;
}

export function str(o: Json, field: string, opts: { max?: number } = {}): string {
  const v = o[field];
  if (v === undefined || v === null || v === "") throw ValidationError.field(field, "is required");
  if (typeof v !== "string") throw ValidationError.field(field, `must be a string, not ${typeName(v)}`);
  const max = opts.max ?? 255;
  if (v.length > max) throw ValidationError.field(field, `is too long (maximum ${max} characters)`);
  return v;
}

export function optStr(o: Json, field: string, opts: { max?: number } = {}): string | undefined {
  const v = o[field];
  if (v === undefined || v === null || v === "") return undefined;
  return str(o, field, opts);
}

export function optBool(o: Json, field: string): boolean | undefined {
  const v = o[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw ValidationError.field(field, `must be true or false, not ${typeName(v)}`);
  return v;
}

export function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return typeof v === "object" ? "an object" : `a ${typeof v}`;
}

/** Positive page numbers for `page`/`per_page` query parameters. */
export function pageParams(c: Context, defaultPerPage = 20): { page: number; perPage: number } {
  const parse = (name: string, fallback: number, max: number): number => {
    const raw = c.req.query(name);
    if (raw === undefined || raw === "") return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1 || n > max) {
      throw ValidationError.field(name, `must be an integer from 1 to ${max}`);
    }
    return n;
  };
  return { page: parse("page", 1, 1_000_000), perPage: parse("per_page", defaultPerPage, 100) };
}
