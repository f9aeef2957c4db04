// The one place where errors become HTTP responses, in the reference service's shapes.
import type { Context } from "hono";
import { CellarError, NotFoundError, ValidationError, ForbiddenError } from "../domain/errors.ts";
import type { Logger } from "../log.ts";

const STATUS: Record<CellarError["code"], number> = {
  invalid_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  payload_too_large: 413,
  validation: 422,
  rate_limited: 429,
  unavailable: 503,
};

export function errorBody(err: CellarError): Record<string, unknown> {
  if (err instanceof ValidationError) return { errors: err.fields };
  if (err instanceof NotFoundError) return { resource: err.resource, error: "not found" };
  if (err instanceof ForbiddenError) return { error: err.message, code: err.reason };
  return { error: err.message };
}

export function statusOf(err: CellarError): number {
  return STATUS[err.code];
}

export function handleError(err: Error, c: Context, log: Logger): Response {
  if (err instanceof CellarError) {
    return c.json(errorBody(err), statusOf(err) as 400);
  }
  log.error("unhandled error", { err: err.message, stack: err.stack, path: c.req.path });
  return c.json({ error: "internal error: the server logged the details" }, 500);
}
