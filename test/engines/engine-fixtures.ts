// Shared fixtures for engine tests: a scratch directory the postgres and haproxy OS users
// can traverse, loopback addresses of our own, and free ports on them.
import { randomInt } from "node:crypto";
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";

export async function scratchDir(prefix: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `cellar-${prefix}-`));
  // Daemons run as their own OS users and must traverse it.
  await fs.chmod(dir, 0o755);
  return dir;
}

/** A random 127.x.y.z subnet prefix, so parallel test files never share an address. */
export function loopbackPrefix(): string {
  return `127.${randomInt(100, 250)}.${randomInt(1, 250)}`;
}

/** A port that is free on `host` right now. */
export function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, host, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Resolves with the error code of a TCP connect to host:port ("connected" if it worked). */
export function tcpConnectResult(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.once("connect", () => {
      socket.destroy();
      resolve("connected");
    });
    socket.once("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

/** Elapsed milliseconds of an async step, for the timings tests print. */
export async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const start = performance.now();
  const value = await fn();
  return [value, Math.round(performance.now() - start)];
}
