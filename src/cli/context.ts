// What every client command receives: output, config dir, a lazily opened session; and
// the wrapper that turns errors into a message on stderr and exit code 1.
import type { Command } from "commander";
import { loadClientEnv, type ClientEnv } from "../config.ts";
import { CliError, type JsonObject } from "./http.ts";
import { createOutput, type Output } from "./output.ts";
import { configDirOf, Session } from "./session.ts";

export interface Ctx {
  out: Output;
  env: ClientEnv;
  configDir: string;
  /** Opens the session on first use: commands that need no login never fail for lack of one. */
  session(): Session;
  /** `--yes` given: destructive commands skip their confirmation. */
  yes: boolean;
}

interface GlobalOpts {
  json?: boolean;
  configDir?: string;
  yes?: boolean;
}

function contextOf(command: Command): Ctx {
  const globals = command.optsWithGlobals<GlobalOpts>();
  const env = loadClientEnv();
  const configDir = configDirOf(globals.configDir, env);
  let session: Session | null = null;
  return {
    out: createOutput(globals.json === true),
    env,
    configDir,
    yes: globals.yes === true,
    session: () => (session ??= Session.open(configDir, env)),
  };
}

export function reportError(err: unknown): number {
  if (err instanceof CliError) {
    process.stderr.write(`cellar: ${err.message}\n`);
    return err.exitCode;
  }
  process.stderr.write(`cellar: unexpected error: ${(err as Error).stack ?? String(err)}\n`);
  return 1;
}

/**
 * Adapts a command body to commander's `(…args, options, command)` calling convention.
 * Errors become a message on stderr and exit code 1 (set, not forced, so output flushes).
 */
export function act<Opts extends object = JsonObject>(
  body: (ctx: Ctx, args: string[], opts: Opts) => Promise<void>,
): (...all: unknown[]) => Promise<void> {
  return async (...all: unknown[]) => {
    const command = all[all.length - 1] as Command;
    const opts = all[all.length - 2] as Opts;
    const args = all.slice(0, -2).flatMap((a) => (Array.isArray(a) ? (a as string[]) : [a as string]));
    try {
      await body(contextOf(command), args, opts);
    } catch (err) {
      process.exitCode = reportError(err);
    }
  };
}

/** The `--app` value, required by most commands. */
export function requireApp(opts: { app?: string }): string {
  if (!opts.app) throw new CliError("which app? pass --app <name>");
  return opts.app;
}

export const enc = encodeURIComponent;
