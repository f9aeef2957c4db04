// Test runner: starts one throwaway PostgreSQL for the whole run, migrates a template
// database that every test file clones, runs node's test runner, then removes everything.
import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { LocalCluster } from "../src/engines/postgresql/local-cluster.ts";
import { createDb } from "../src/store/db.ts";
import { migrate } from "../src/store/migrate.ts";
import { TEMPLATE_DB } from "./support/db.ts";

async function findTests(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await findTests(full)));
    else if (entry.name.endsWith(".test.ts")) out.push(full);
  }
  return out.sort();
}

async function main(): Promise<number> {
  const baseDir = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-test-pg-"));
  await fs.chmod(baseDir, 0o755);
  const cluster = new LocalCluster({ baseDir, port: 5432, settings: { max_connections: 300, fsync: "off" } });
  const cleanup = async () => {
    await cluster.destroy().catch(() => undefined);
  };
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.on(sig, () => void cleanup().finally(() => process.exit(130)));
  }
  try {
    await cluster.ensureInitialised();
    await cluster.start();
    const admin = new pg.Client(cluster.connectionConfig("postgres"));
    await admin.connect();
    await admin.query(`CREATE DATABASE ${TEMPLATE_DB}`);
    await admin.end();
    const db = createDb(cluster.connectionConfig(TEMPLATE_DB));
    await migrate(db);
    await db.close();

    const args = process.argv.slice(2);
    const files = args.length ? args : await findTests(path.resolve("test"));
    const child = spawn(
      process.execPath,
      ["--import", "tsx", "--test", "--test-concurrency=2", "--test-timeout=600000", ...files],
      {
        stdio: ["ignore", "pipe", "inherit"],
        env: {
          ...process.env,
          CELLAR_TEST_PG_HOST: cluster.socketDir,
          CELLAR_TEST_PG_PORT: String(cluster.port),
        },
      },
    );
    return await new Promise<number>((resolve) => {
      // The runner prints its summary, then waits for every pipe it handed out to close. A
      // process that a test leaked keeps one open and would hang the run: that is a failure.
      let tail = "";
      let timer: NodeJS.Timeout | undefined;
      child.stdout.on("data", (chunk: Buffer) => {
        process.stdout.write(chunk);
        tail = (tail + chunk.toString()).slice(-4096);
        if (!timer && /^# duration_ms /m.test(tail)) {
          timer = setTimeout(() => {
            process.stdout.write(
              "\ntest runner still open 60 s after its summary: a test leaked a process holding its output\n",
            );
            child.kill("SIGKILL");
            resolve(1);
          }, 60_000);
        }
      });
      child.on("exit", (code) => {
        clearTimeout(timer);
        resolve(code ?? 1);
      });
    });
  } finally {
    await cleanup();
  }
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`test runner failed: ${err.stack ?? err.message}\n`);
    process.exit(1);
  },
);
