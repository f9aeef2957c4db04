// Client namespaces for network tests: each is a machine of its own with one address on a
// public bridge (or inside a database's network), from which the test connects. Everything
// made here is removed by close(), even after a failure half-way.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { promisify } from "node:util";
import { cidrOf } from "../../src/domain/ipv4.ts";
import { deleteNetns, inNetns, ip, netnsPids } from "../../src/runtime/netns.ts";
import { publicBridgeName } from "../../src/runtime/vpc.ts";

const run = promisify(execFile);

export type TcpOutcome = "data" | "open" | "closed" | "refused" | "timeout" | "unreachable";

export interface TcpResult {
  outcome: TcpOutcome;
  /** First bytes received, hex. */
  data: string;
}

// Runs inside the client namespace: connect, optionally send bytes, report what happened.
const PROBE = `
const net = require("node:net");
const [host, port, hex, waitMs, connectMs] = process.argv.slice(1);
let data = "";
const done = (outcome) => { process.stdout.write(JSON.stringify({ outcome, data })); process.exit(0); };
const s = net.connect({ host, port: Number(port) });
const t = setTimeout(() => done("timeout"), Number(connectMs));
s.on("connect", () => {
  clearTimeout(t);
  if (hex) s.write(Buffer.from(hex, "hex"));
  setTimeout(() => done(data ? "data" : "open"), Number(waitMs));
});
s.on("data", (d) => { data += d.toString("hex"); done("data"); });
s.on("close", () => done(data ? "data" : "closed"));
s.on("error", (e) => {
  if (e.code === "ECONNREFUSED") done("refused");
  else if (e.code === "ENETUNREACH" || e.code === "EHOSTUNREACH") done("unreachable");
  else if (e.code === "ECONNRESET" || e.code === "EPIPE") done(data ? "data" : "closed");
  else done("timeout");
});
`;

/** PostgreSQL's SSLRequest: what a TLS client sends first. */
export const SSL_REQUEST = "0000000804d2162f";
/** The start of a plaintext startup message (protocol 3.0). */
export const PLAIN_STARTUP = "0000000800030000";

export class NetLab {
  private readonly made: { ns: string; hostIf: string }[] = [];
  private readonly prefix: number;

  constructor(readonly publicNetwork: string) {
    this.prefix = cidrOf(publicNetwork).prefix;
  }

  /**
   * A namespace with `address` on the public bridge, or on `on` (another network's bridge and
   * prefix, e.g. a region's private network); the bridge must exist.
   */
  async client(name: string, address: string, on?: { bridge: string; prefix: number }): Promise<string> {
    const h = createHash("sha256").update(`${name}:${process.pid}`).digest("hex");
    const ns = `ct-${h.slice(0, 12)}`;
    const hostIf = `vc${h.slice(0, 10)}`;
    this.made.push({ ns, hostIf });
    await ip(["netns", "add", ns]);
    await ip(["-n", ns, "link", "set", "lo", "up"]);
    await ip(["link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns]);
    await ip(["link", "set", hostIf, "master", on?.bridge ?? publicBridgeName(this.publicNetwork), "up"]);
    await ip(["-n", ns, "addr", "add", `${address}/${on?.prefix ?? this.prefix}`, "dev", "eth0"]);
    await ip(["-n", ns, "link", "set", "eth0", "up"]);
    return ns;
  }

  /** Connects from `ns` (null: this process's namespace) and tells what happened. */
  async tcp(
    ns: string | null,
    host: string,
    port: number,
    opts: { send?: string; waitMs?: number; connectMs?: number } = {},
  ): Promise<TcpResult> {
    const argv = [
      process.execPath,
      "-e",
      PROBE,
      host,
      String(port),
      opts.send ?? "",
      String(opts.waitMs ?? 300),
      String(opts.connectMs ?? 2000),
    ];
    const [cmd, ...args] = ns ? inNetns(ns, argv) : argv;
    const { stdout } = await run(cmd!, args, { timeout: 15_000 });
    return JSON.parse(stdout) as TcpResult;
  }

  /** Runs psql in `ns` with a connection URI; never throws. */
  async psql(ns: string, uri: string, sql: string): Promise<{ ok: boolean; out: string }> {
    const argv = ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", uri, "-c", sql];
    const [cmd, ...args] = inNetns(ns, argv);
    return run(cmd!, args, { timeout: 20_000, env: { ...process.env, PGCONNECT_TIMEOUT: "4" } }).then(
      ({ stdout }) => ({ ok: true, out: stdout.trim() }),
      (err: { stderr?: string; message: string }) => ({ ok: false, out: (err.stderr ?? err.message).trim() }),
    );
  }

  async close(): Promise<void> {
    for (const { ns, hostIf } of this.made.splice(0)) {
      for (const pid of await netnsPids(ns)) process.kill(pid, "SIGKILL");
      // The pair goes first (deleteNetns): the bridge has no port left when close() returns.
      await deleteNetns(ns).catch(() => undefined);
      await ip(["link", "delete", hostIf]).catch(() => "");
    }
  }
}

/** Interfaces of the host namespace whose name starts with `prefix` (leak checks). */
export async function hostLinks(prefix: string): Promise<string[]> {
  const { stdout } = await run("ip", ["-o", "link", "show"]);
  return stdout
    .split("\n")
    .map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1] ?? "")
    .filter((n) => n.startsWith(prefix));
}
