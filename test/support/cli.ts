// Runs the real `cellar` CLI as a child process, with its own config dir and environment.
import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { REPO_ROOT } from "../../src/config.ts";

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface CliRunner {
  configDir: string;
  /** Runs `cellar <args>`; `input` is written to its stdin (closed either way). */
  run(args: string[], opts?: { input?: string; env?: Record<string, string> }): Promise<CliResult>;
  cleanup(): Promise<void>;
}

const ENTRY = path.join(REPO_ROOT, "src", "main", "cli-entry.ts");
const CHILD_TIMEOUT_MS = 60_000;

export async function cliRunner(): Promise<CliRunner> {
  const home = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-cli-test-"));
  const configDir = path.join(home, "config");
  return {
    configDir,
    run(args, opts = {}) {
      // Only what the CLI needs: no CELLAR_* of the developer's shell leaks in.
      const env = {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        HOME: home,
        CELLAR_CONFIG_DIR: configDir,
        ...opts.env,
      };
      return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, ["--import", "tsx", ENTRY, ...args], { cwd: REPO_ROOT, env });
        let stdout = "";
        let stderr = "";
        child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
        child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
        const timer = setTimeout(() => child.kill("SIGKILL"), CHILD_TIMEOUT_MS);
        child.on("error", reject);
        child.on("close", (code) => {
          clearTimeout(timer);
          resolve({ code, stdout, stderr });
        });
        child.stdin.end(opts.input ?? "");
      });
    },
    async cleanup() {
      await fs.rm(home, { recursive: true, force: true });
    },
  };
}
