// Composition root of a host agent: isolation runtime, PostgreSQL driver, controller client.
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { isRoot } from "../engines/postgresql/local-cluster.ts";
import os from "node:os";
import { Agent } from "../agent/agent.ts";
import { LogicalBackupWorker } from "../agent/logical-backups.ts";
import { ControllerClient } from "../agent/controller-client.ts";
import { PostgresDriver } from "../agent/postgres.driver.ts";
import type { Logger } from "../log.ts";
import { createIsolationRuntime } from "../runtime/factory.ts";
import { describeIsolation, probeIsolation } from "../runtime/probe.ts";

export interface AgentCommandOptions {
  name: string;
  region: string;
  az: string;
  pool: "shared" | "dedicated";
  address: string;
  vcpu: number;
  ramMb: number;
  diskGb: number;
  controllerUrl: string;
  caFile: string;
  joinTokenFile: string;
  stateDir: string;
}

/** A short directory for this agent's unix sockets, unique per state directory. */
export function shortRunDir(stateDir: string): string {
  const base = isRoot() ? "/run/cellar" : path.join(os.tmpdir(), "cellar-run");
  return path.join(base, createHash("sha256").update(path.resolve(stateDir)).digest("hex").slice(0, 10));
}

export async function runAgent(opts: AgentCommandOptions, log: Logger): Promise<{ stop(): Promise<void> }> {
  const probe = await probeIsolation();
  const lines = describeIsolation(probe);
  // Said at start and in the host's status: never pretend to isolate what is not isolated.
  for (const line of lines) log.info(`isolation: ${line}`, { host: opts.name });
  const runtime = await createIsolationRuntime(probe, { parent: `cellar-${opts.name}` });
  const [ca, joinToken] = await Promise.all([
    fs.readFile(opts.caFile, "utf8"),
    fs.readFile(opts.joinTokenFile, "utf8").then((t) => t.trim()),
  ]);
  const runDir = shortRunDir(opts.stateDir);
  // Traversable by the postgres and haproxy users, who own their own socket dirs below.
  for (const dir of [path.dirname(runDir), runDir]) {
    await fs.mkdir(dir, { recursive: true, mode: 0o755 });
    await fs.chmod(dir, 0o755);
  }
  const driver = new PostgresDriver({
    stateDir: opts.stateDir,
    runDir,
    runtime,
    exclusiveCpus: opts.pool === "dedicated" ? os.cpus().map((_, i) => i) : [],
    log,
  });
  // In the background: registration need not wait; a provisioning meanwhile waits for it.
  void driver.prepareTemplate().then(
    (err) => err && log.warn("no template data dir on this host: new nodes use initdb", { err: err.message }),
    (err: Error) => log.warn("cannot prepare the host layout", { err: err.message }),
  );
  const controller = new ControllerClient({ url: opts.controllerUrl, ca });
  const agent = new Agent({
    name: opts.name,
    region: opts.region,
    az: opts.az,
    pool: opts.pool,
    address: opts.address,
    capacity: { vcpu: opts.vcpu, ramMb: opts.ramMb, diskGb: opts.diskGb },
    isolation: { runtime: runtime.kind, summary: lines },
    stateDir: opts.stateDir,
    controller,
    joinToken,
    driver,
    log: log.child({ host: opts.name }),
  });
  await agent.start();
  // Dumps of this host's nodes, through the socket directory the driver gives each node.
  const logicalBackups = new LogicalBackupWorker({
    controller,
    socketDirOf: (id) => path.join(runDir, id.replace(/^inst-/, "")),
    log: log.child({ host: opts.name }),
  });
  logicalBackups.start();
  return {
    async stop() {
      await logicalBackups.stop();
      await agent.stop();
      await driver.stopAll();
    },
  };
}
