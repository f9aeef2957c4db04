// The `openssl` CLI: Node can make keys and read X.509 certificates, but cannot issue them.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { CommandFailedError } from "../postgresql/errors.ts";

function run(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("openssl", args, (err, stdout, stderr) => {
      if (err) reject(new CommandFailedError(`openssl ${args[0] ?? ""}`, (stderr || err.message).trim()));
      else resolve(stdout);
    });
  });
}

/**
 * Runs `openssl <args> -config <file>` with `config` in a short-lived file in `dir`
 * (/dev/stdin does not work: Node's stdio pipes are sockets, which fopen refuses).
 */
export async function opensslWithConfig(args: string[], config: string, dir: string): Promise<string> {
  const file = path.join(dir, `.openssl-${process.pid}-${randomBytes(4).toString("hex")}.cnf`);
  await fs.writeFile(file, config, { mode: 0o600 });
  try {
    return await run([...args, "-config", file]);
  } finally {
    await fs.rm(file, { force: true });
  }
}
