// Typed failures of the engine layer. The agent turns them into instance status messages,
// so each message says what failed and where, in words an operator can act on.

export class EngineError extends Error {
  override name = "EngineError";
}

/** An external program (initdb, pg_ctl, openssl, haproxy...) exited with an error. */
export class CommandFailedError extends EngineError {
  override name = "CommandFailedError";
  constructor(
    readonly command: string,
    readonly detail: string,
  ) {
    super(`${command} failed: ${detail}`);
  }
}

/** A server could not bind its listen address because another process holds it. */
export class PortInUseError extends EngineError {
  override name = "PortInUseError";
  constructor(
    readonly service: "postgresql" | "haproxy",
    readonly host: string,
    readonly port: number,
  ) {
    super(`${service} cannot listen on ${host}:${port}: the port is already in use by another process`);
  }
}

/** A condition (server ready, process gone) did not hold within its deadline. */
export class EngineTimeoutError extends EngineError {
  override name = "EngineTimeoutError";
}
