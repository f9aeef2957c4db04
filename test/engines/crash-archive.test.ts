// A server back from a crash keeps archiving on archive_timeout. PostgreSQL 15's checkpointer
// sleeps through archive_timeout after crash recovery until something wakes it; the node's
// start wakes it, so a Starter's recovery point keeps moving after a crash.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { PostgresInstance } from "../../src/engines/postgresql/instance.ts";
import { planPostgresSettings } from "../../src/engines/postgresql/plan-settings.ts";
import { isProcessAlive, waitFor } from "../../src/engines/postgresql/process-watch.ts";
import { queryOnce } from "../../src/engines/postgresql/superuser.ts";
import { ensureCa } from "../../src/engines/tls/certificates.ts";
import { freePort, loopbackPrefix, scratchDir } from "./engine-fixtures.ts";

const SETTINGS = planPostgresSettings({ ramMb: 512, maxConnections: 30, model: "shared" });

describe("archive_timeout after a crash", () => {
  let dir: string;
  let node: PostgresInstance;
  const archived = async () =>
    Number(
      (await queryOnce(node.superuserConfig(), "SELECT archived_count FROM pg_stat_archiver"))[0]!
        .archived_count,
    );

  before(async () => {
    dir = await scratchDir("crash-archive");
    const host = `${loopbackPrefix()}.1`;
    node = new PostgresInstance({
      id: "inst-crasharch",
      baseDir: path.join(dir, "node"),
      listenAddress: host,
      port: await freePort(host),
    });
    await node.ensureInitialised();
    const ca = await ensureCa(path.join(dir, "ca"), "osc-fr1");
    await node.ensureServerCertificate(ca, { commonName: "inst-crasharch", ipAddresses: [host] });
    // The archive is not the point here: every segment is "archived" at once.
    await node.configure(SETTINGS, { forceTls: false, archive: { command: "true", timeoutS: 1 } });
    await node.start();
  });
  after(async () => {
    await node?.destroy().catch(() => undefined);
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("switches WAL segments on archive_timeout once restarted after a kill -9", async () => {
    await queryOnce(node.superuserConfig(), "CREATE TABLE w (id serial, pad text)");
    // Enough WAL that crash recovery replays something and recycles segments.
    await queryOnce(
      node.superuserConfig(),
      "INSERT INTO w (pad) SELECT repeat('x', 500) FROM generate_series(1, 40000)",
    );
    const pid = (await node.postmasterPid())!;
    process.kill(pid, "SIGKILL");
    await waitFor("the killed postmaster to be gone", async () => !(await isProcessAlive(pid)), 10_000, 50);
    await node.start();
    const before = await archived();
    // Writes every 200 ms: with archive_timeout 1 s, a segment is archived within seconds.
    const deadline = Date.now() + 15_000;
    let now = before;
    while (now === before && Date.now() < deadline) {
      await queryOnce(node.superuserConfig(), "INSERT INTO w (pad) VALUES ('y')");
      await new Promise((r) => setTimeout(r, 200));
      now = await archived();
    }
    assert.ok(
      now > before,
      `no segment archived in 15 s of writes after the restart (archived_count ${now})`,
    );
  });
});
