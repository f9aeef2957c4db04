// The local fleet of the all-in-one mode: emulated hosts on this machine, each with its own
// loopback address and its own agent process (so an agent can be killed like a real host's).
import { spawn, type ChildProcess } from "node:child_process";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { REPO_ROOT, type Config } from "../config.ts";
import type { Logger } from "../log.ts";

export interface LocalHost {
  name: string;
  region: string;
  az: string;
  pool: "shared" | "dedicated";
  address: string;
  vcpu: number;
  ramMb: number;
  diskGb: number;
}

/**
 * Two shared hosts in the first AZ and three dedicated hosts, one per AZ, in the default
 * region. Each emulated host declares this machine's CPUs and memory: they share them, which
 * the isolation report of each host says.
 */
export function defaultLocalFleet(config: Config): LocalHost[] {
  const region = config.regions.find((r) => r.name === config.defaultRegion)!;
  const vcpu = os.cpus().length;
  const ramMb = Math.floor(os.totalmem() / 1024 / 1024);
  const diskGb = 200;
  const hosts: LocalHost[] = [];
  for (let i = 1; i <= 2; i++) {
    hosts.push({
      name: `local-shared-${i}`,
      region: region.name,
      az: region.azs[0]!,
      pool: "shared",
      address: `127.20.0.${i}`,
      vcpu,
      ramMb,
      diskGb,
    });
  }
  region.azs.slice(0, 3).forEach((az, i) => {
    hosts.push({
      name: `local-dedicated-${i + 1}`,
      region: region.name,
      az,
      pool: "dedicated",
      address: `127.21.0.${i + 1}`,
      vcpu,
      ramMb: Math.min(ramMb, 16384),
      diskGb,
    });
  });
  return hosts;
}

export interface Fleet {
  hosts: LocalHost[];
  /** The agent process of a host (tests kill it to emulate a host failure). */
  processOf(name: string): ChildProcess | undefined;
  /** Starts (again) the agent of one host. */
  startAgent(name: string): void;
  /** Stops every agent; each stops its instances cleanly first. */
  stop(): Promise<void>;
}

export function startLocalFleet(
  config: Config,
  log: Logger,
  opts: {
    controllerUrl: string;
    caFile: string;
    joinTokenFile: string;
    hosts?: LocalHost[];
    /** Also hands each line an agent writes to this (tests read what the agents did). */
    onAgentLine?: (host: string, line: string) => void;
  },
): Fleet {
  const hosts = opts.hosts ?? defaultLocalFleet(config);
  const procs = new Map<string, ChildProcess>();

  const startAgent = (name: string) => {
    const h = hosts.find((x) => x.name === name);
    if (!h) throw new Error(`unknown local host ${name}`);
    const args = [
      "--import",
      "tsx",
      path.join(REPO_ROOT, "src/main/cli-entry.ts"),
      "agent",
      `--name=${h.name}`,
      `--region=${h.region}`,
      `--az=${h.az}`,
      `--pool=${h.pool}`,
      `--address=${h.address}`,
      `--vcpu=${h.vcpu}`,
      `--ram-mb=${h.ramMb}`,
      `--disk-gb=${h.diskGb}`,
      `--controller-url=${opts.controllerUrl}`,
      `--ca-file=${opts.caFile}`,
      `--join-token-file=${opts.joinTokenFile}`,
      `--state-dir=${path.join(config.dataDir, "hosts", h.name)}`,
      "--exit-with-parent",
    ];
    // The agent watches its stdin: if this process dies without stopping it, the pipe closes.
    const output = opts.onAgentLine ? "pipe" : "inherit";
    const child = spawn(process.execPath, args, { stdio: ["pipe", output, output], cwd: REPO_ROOT });
    if (opts.onAgentLine) tee(name, child, opts.onAgentLine);
    procs.set(name, child);
    child.on("exit", (code, signal) => {
      if (procs.get(name) === child) procs.delete(name);
      if (code !== 0) log.warn("agent exited", { host: name, code, signal });
    });
  };

  for (const h of hosts) startAgent(h.name);
  log.info("local fleet started", { hosts: hosts.map((h) => `${h.name}@${h.address}`).join(",") });

  return {
    hosts,
    processOf: (name) => procs.get(name),
    startAgent,
    async stop() {
      await Promise.all(
        [...procs.values()].map(
          (child) =>
            new Promise<void>((resolve) => {
              if (child.exitCode !== null || child.signalCode !== null) return resolve();
              child.once("exit", () => resolve());
              child.kill("SIGTERM");
            }),
        ),
      );
    },
  };
}

/** Passes an agent's output on to this process's own, and each line to `onLine`. */
function tee(host: string, child: ChildProcess, onLine: (host: string, line: string) => void): void {
  for (const [stream, sink] of [
    [child.stdout, process.stdout],
    [child.stderr, process.stderr],
  ] as const) {
    if (!stream) continue;
    stream.pipe(sink, { end: false });
    readline.createInterface({ input: stream }).on("line", (line) => onLine(host, line));
  }
}
