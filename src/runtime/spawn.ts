// Starting a process inside a sandbox without a window where it runs outside: a tiny shell
// writes its own pid into the sandbox's cgroup.procs files, then execs the real command, so
// the command and everything it forks (PostgreSQL's backends) start inside the sandbox.
import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { assertSandboxName } from "./limits.ts";
import type { IsolationRuntime } from "./types.ts";

/** Exit status of the wrapper when it could not join the sandbox (the command never ran). */
export const WRAPPER_FAILED_EXIT = 125;

// $1 = number of procs files, then the files, then the command and its arguments.
const SCRIPT = [
  'n="$1"; shift',
  'while [ "$n" -gt 0 ]; do',
  `  echo "$$" > "$1" || exit ${WRAPPER_FAILED_EXIT}`,
  "  shift; n=$((n - 1))",
  "done",
  'exec "$@"',
].join("\n");

/**
 * The argv to exec instead of [cmd, ...args]. With a runtime that isolates nothing it is
 * [cmd, ...args] unchanged. Paths and arguments are passed as separate argv entries, never
 * pasted into the script, so no quoting can go wrong.
 */
export function wrapCommand(
  runtime: IsolationRuntime,
  name: string,
  cmd: string,
  args: readonly string[],
): string[] {
  const files = runtime.procsFiles(assertSandboxName(name));
  if (files.length === 0) return [cmd, ...args];
  return ["/bin/sh", "-c", SCRIPT, "cellar-sandbox", String(files.length), ...files, cmd, ...args];
}

/** spawn() of `cmd args` inside the sandbox `name` (see wrapCommand). The sandbox must exist. */
export function spawnInSandbox(
  runtime: IsolationRuntime,
  name: string,
  cmd: string,
  args: readonly string[],
  opts: SpawnOptions = {},
): ChildProcess {
  const [file, ...rest] = wrapCommand(runtime, name, cmd, args);
  return spawn(file!, rest, opts);
}
