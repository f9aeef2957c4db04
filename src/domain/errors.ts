// Typed domain errors with stable codes. They are mapped to HTTP in exactly one place
// (src/api/errors.ts), using the reference service's error shapes.

export type ErrorCode =
  | "invalid_request" // 400 {error}
  | "unauthorized" // 401 {error}
  | "forbidden" // 403 {error, code}
  | "not_found" // 404 {resource, error}
  | "conflict" // 409 {error}
  | "validation" // 422 {errors: {field: [msg]}}
  | "payload_too_large" // 413 {error}
  | "rate_limited" // 429 {error}
  | "unavailable"; // 503 {error}

export class CellarError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "CellarError";
  }
}

export class NotFoundError extends CellarError {
  constructor(readonly resource: string) {
    super("not_found", `${resource} not found`);
  }
}

export class ForbiddenError extends CellarError {
  constructor(
    message: string,
    readonly reason = "forbidden",
  ) {
    super("forbidden", message);
  }
}

export class ConflictError extends CellarError {
  constructor(message: string) {
    super("conflict", message);
  }
}

/** One or more invalid fields, each with human messages saying what is allowed. */
export class ValidationError extends CellarError {
  constructor(readonly fields: Record<string, string[]>) {
    super(
      "validation",
      Object.entries(fields)
        .map(([f, m]) => `${f} ${m.join(", ")}`)
        .join("; "),
    );
  }

  static field(field: string, message: string): ValidationError {
    return new ValidationError({ [field]: [message] });
  }
}

export class BadRequestError extends CellarError {
  constructor(message: string) {
    super("invalid_request", message);
  }
}

export class UnauthorizedError extends CellarError {
  constructor(message = "authentication required: send 'Authorization: Bearer <token>'") {
    super("unauthorized", message);
  }
}
