// Server-side commands of `cellar`: the all-in-one `up`, a host `agent`, and operator `admin`.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { loadConfig } from "../config.ts";
import { INTERNAL_CA } from "../engines/tls/pki.ts";
import { createLogger, type Logger } from "../log.ts";
import { openStore } from "../store/open.ts";
import { insertToken, insertUser } from "../store/users.store.ts";
import { runAgent } from "./agent-main.ts";
import { startController } from "./controller.ts";
import { startLocalFleet, type Fleet } from "./fleet.ts";

function readOrCreateSecretFile(file: string): string {
  try {
    return fs.readFileSync(file, "utf8").trim();
  } catch {
    const token = `tk-us-${randomBytes(32).toString("base64url")}`;
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, token + "\n", { mode: 0o600 });
    return token;
  }
}

/** Runs `stop` once on SIGINT/SIGTERM, then exits. */
function onShutdown(log: Logger, stop: () => Promise<void>): void {
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("stopping", { signal });
    stop().then(
      () => process.exit(0),
      (err: Error) => {
        log.error("stop failed", { err: err.message });
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", () => shutdown("SIGINT"));
  process.on("SIGTERM", () => shutdown("SIGTERM"));
}

async function up(): Promise<void> {
  const loaded = loadConfig();
  // All-in-one: without CELLAR_ADMIN_TOKEN, a generated admin token is kept in the data dir.
  const adminTokenFile = path.join(loaded.dataDir, "admin-token");
  const config = { ...loaded, adminToken: loaded.adminToken ?? readOrCreateSecretFile(adminTokenFile) };
  const log = createLogger(config.logLevel);
  const controller = await startController(config, log);
  let fleet: Fleet | null = null;
  if (config.localFleet) {
    const caFile = path.join(config.dataDir, "pki", INTERNAL_CA, "ca.crt");
    fleet = startLocalFleet(config, log, {
      controllerUrl: controller.agentUrl,
      caFile,
      joinTokenFile: path.join(config.dataDir, "agent-join-token"),
    });
  }
  const tokenHint = loaded.adminToken ? '"$CELLAR_ADMIN_TOKEN"' : `"$(cat ${adminTokenFile})"`;
  process.stdout.write(
    [
      "",
      `Cellar is up: API ${controller.url}`,
      `  data directory: ${config.dataDir}`,
      fleet
        ? `  local hosts:    ${fleet.hosts.map((h) => `${h.name} (${h.pool}, ${h.az}, ${h.address})`).join("\n                  ")}`
        : "  no local hosts (CELLAR_LOCAL_FLEET=off)",
      `  admin API token: ${loaded.adminToken ? "the value of CELLAR_ADMIN_TOKEN" : adminTokenFile}`,
      `  log in:   bin/cellar login --api-url ${controller.url} --token ${tokenHint}`,
      `  by hand:  curl -s -u :${tokenHint} -X POST ${controller.url}/v1/tokens/exchange`,
      "Press Ctrl-C to stop.",
      "",
    ].join("\n"),
  );
  onShutdown(log, async () => {
    await fleet?.stop();
    await controller.stop();
  });
}

interface AgentFlags {
  name: string;
  region: string;
  az: string;
  pool: string;
  address: string;
  vcpu: string;
  ramMb: string;
  diskGb: string;
  controllerUrl: string;
  caFile: string;
  joinTokenFile: string;
  stateDir: string;
  exitWithParent?: boolean;
}

async function agent(flags: AgentFlags): Promise<void> {
  const log = createLogger(loadConfig().logLevel);
  if (flags.pool !== "shared" && flags.pool !== "dedicated")
    throw new Error("--pool must be shared or dedicated");
  const positive = (name: string, v: string) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number (got ${v})`);
    return n;
  };
  const handle = await runAgent(
    {
      name: flags.name,
      region: flags.region,
      az: flags.az,
      pool: flags.pool,
      address: flags.address,
      vcpu: positive("vcpu", flags.vcpu),
      ramMb: positive("ram-mb", flags.ramMb),
      diskGb: positive("disk-gb", flags.diskGb),
      controllerUrl: flags.controllerUrl,
      caFile: flags.caFile,
      joinTokenFile: flags.joinTokenFile,
      stateDir: flags.stateDir,
    },
    log,
  );
  onShutdown(log, () => handle.stop());
  if (flags.exitWithParent) {
    // Local-fleet agents: when the process that started them is gone (even killed with -9),
    // their stdin pipe closes and they stop with it rather than run on as orphans.
    process.stdin.on("close", () => process.kill(process.pid, "SIGTERM"));
    process.stdin.resume();
  }
}

export function registerServerCommands(program: Command): void {
  program
    .command("up")
    .description("run Cellar all-in-one on this machine: control plane, embedded store, local hosts")
    .action(up);

  program
    .command("agent")
    .description("run the host agent of one host (registers with the controller, runs its instances)")
    .requiredOption("--name <name>", "host name, unique in the deployment")
    .requiredOption("--region <region>", "region of the host")
    .requiredOption("--az <az>", "availability zone of the host")
    .requiredOption("--pool <pool>", "shared or dedicated")
    .requiredOption("--address <ip>", "address the host's instances listen on")
    .requiredOption("--vcpu <n>", "vCPUs the host offers")
    .requiredOption("--ram-mb <n>", "memory the host offers, in MB")
    .requiredOption("--disk-gb <n>", "disk the host offers, in GB")
    .requiredOption("--controller-url <url>", "the controller's agent URL (https://...:5443/agent/v1)")
    .requiredOption("--ca-file <file>", "CA certificate that signed the controller's agent listener")
    .requiredOption("--join-token-file <file>", "file holding the agent join token")
    .requiredOption("--state-dir <dir>", "where the agent keeps its token and instances")
    .option("--exit-with-parent", "stop when stdin closes (agents started by `cellar up`)", false)
    .action(agent);

  const admin = program.command("admin").description("operator commands working on the store directly");
  admin
    .command("create-user")
    .description("create a user and print an API token for them")
    .requiredOption("--username <name>", "login name")
    .requiredOption("--email <email>", "email address")
    .option("--admin", "make the user an admin", false)
    .action(async (opts: { username: string; email: string; admin: boolean }) => {
      const store = await openStore(loadConfig(), createLogger("warn"));
      try {
        const user = await insertUser(store.db, {
          username: opts.username,
          email: opts.email,
          isAdmin: opts.admin,
        });
        const { secret } = await insertToken(store.db, user.id, "created by cellar admin");
        process.stdout.write(`user ${user.id} (${user.username})\nAPI token: ${secret}\n`);
      } finally {
        await store.close();
      }
    });
}
