// Entry point of the `cellar` command: server commands here, client commands in src/cli.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { Command } from "commander";
import { ConfigError, loadConfig } from "../config.ts";
import { createLogger } from "../log.ts";
import { insertToken, insertUser } from "../store/users.store.ts";
import { openStore } from "../store/open.ts";
import { startController } from "./controller.ts";

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

const program = new Command();
program.name("cellar").description("Cellar: self-hosted managed databases").showHelpAfterError();

program
  .command("up")
  .description("run Cellar all-in-one on this machine (control plane and embedded store)")
  .action(async () => {
    const loaded = loadConfig();
    // All-in-one: without CELLAR_ADMIN_TOKEN, a generated admin token is kept in the data dir.
    const adminTokenFile = path.join(loaded.dataDir, "admin-token");
    const config = { ...loaded, adminToken: loaded.adminToken ?? readOrCreateSecretFile(adminTokenFile) };
    const log = createLogger(config.logLevel);
    const controller = await startController(config, log);
    process.stdout.write(
      [
        "",
        `Cellar is up: API ${controller.url}`,
        `  data directory: ${config.dataDir}`,
        loaded.adminToken
          ? "  admin API token: the value of CELLAR_ADMIN_TOKEN"
          : `  admin API token: in ${adminTokenFile}`,
        `  log in:       bin/cellar login --api-url ${controller.url} --token "$(cat ${adminTokenFile})"`,
        `  or by hand:   curl -s -u ":$(cat ${adminTokenFile})" -X POST ${controller.url}/v1/tokens/exchange`,
        "Press Ctrl-C to stop.",
        "",
      ].join("\n"),
    );
    let stopping = false;
    const shutdown = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info("stopping", { signal });
      controller.stop().then(
        () => process.exit(0),
        (err: Error) => {
          log.error("stop failed", { err: err.message });
          process.exit(1);
        },
      );
    };
    process.on("SIGINT", () => shutdown("SIGINT"));
    process.on("SIGTERM", () => shutdown("SIGTERM"));
  });

const admin = program.command("admin").description("operator commands working on the store directly");

admin
  .command("create-user")
  .description("create a user and print an API token for them")
  .requiredOption("--username <name>", "login name")
  .requiredOption("--email <email>", "email address")
  .option("--admin", "make the user an admin", false)
  .action(async (opts: { username: string; email: string; admin: boolean }) => {
    const config = loadConfig();
    const log = createLogger("warn");
    const store = await openStore(config, log);
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

program.parseAsync().catch((err: Error) => {
  process.stderr.write(`cellar: ${err instanceof ConfigError ? err.message : err.message}\n`);
  process.exit(1);
});
