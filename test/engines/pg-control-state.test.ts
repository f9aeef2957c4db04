// pg_control read directly (a planned switchover watches the old leader's shutdown this
// way): the state and latest checkpoint must say what pg_controldata says, on a real server.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { PostgresInstance } from "../../src/engines/postgresql/instance.ts";
import {
  parseControlState,
  readControlState,
  walEndBefore,
} from "../../src/engines/postgresql/pg-control.ts";
import { planPostgresSettings } from "../../src/engines/postgresql/plan-settings.ts";
import { queryOnce } from "../../src/engines/postgresql/superuser.ts";
import { ensureCa } from "../../src/engines/tls/certificates.ts";
import { freePort, loopbackPrefix, scratchDir } from "./engine-fixtures.ts";

const SETTINGS = planPostgresSettings({ ramMb: 512, maxConnections: 30, model: "shared" });

/** pg_controldata's own reading, as "key: value" pairs. */
function controldata(dataDir: string): Map<string, string> {
  const out = execFileSync("/usr/lib/postgresql/15/bin/pg_controldata", [dataDir], {
    env: { ...process.env, LANG: "C", LC_ALL: "C" },
  }).toString();
  return new Map(
    out.split("\n").flatMap((line) => {
      const at = line.indexOf(":");
      return at < 0 ? [] : [[line.slice(0, at).trim(), line.slice(at + 1).trim()] as [string, string]];
    }),
  );
}

const lsnText = (lsn: bigint) =>
  `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;

describe("pg_control state", () => {
  let dir: string;
  let node: PostgresInstance;

  before(async () => {
    dir = await scratchDir("pg-control-state");
    const host = `${loopbackPrefix()}.1`;
    node = new PostgresInstance({
      id: "inst-pgcontrol",
      baseDir: path.join(dir, "node"),
      listenAddress: host,
      port: await freePort(host),
    });
    await node.ensureInitialised();
    const ca = await ensureCa(path.join(dir, "ca"), "osc-fr1");
    await node.ensureServerCertificate(ca, { commonName: "inst-pgcontrol", ipAddresses: [host] });
    await node.configure(SETTINGS, { forceTls: false });
    await node.start();
  });
  after(async () => {
    await node?.destroy().catch(() => undefined);
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("reads 'in production' while the server runs", async () => {
    await queryOnce(node.superuserConfig(), "CHECKPOINT");
    const state = await readControlState(node.dataDir);
    assert.equal(state?.state, "in production");
  });

  it("reads 'shut down' and the shutdown checkpoint after a clean stop, as pg_controldata does", async () => {
    await queryOnce(node.superuserConfig(), "CREATE TABLE t AS SELECT generate_series(1, 1000) AS n");
    await node.stop("fast");
    const state = await readControlState(node.dataDir);
    const expected = controldata(node.dataDir);
    assert.equal(state?.state, expected.get("Database cluster state"));
    assert.equal(state?.state, "shut down");
    assert.equal(lsnText(state.checkpointLsn), expected.get("Latest checkpoint location"));
    assert.equal(String(state.timeline), expected.get("Latest checkpoint's TimeLineID"));
  });

  it("refuses a torn read (the CRC does not match)", async () => {
    const control = await fs.readFile(path.join(node.dataDir, "global", "pg_control"));
    assert.notEqual(parseControlState(control), null);
    control.writeUInt32LE(control.readUInt32LE(16) ^ 0xff, 16);
    assert.equal(parseControlState(control), null);
  });

  it("finds where the WAL before a checkpoint record ends, past page headers", () => {
    // A shutdown with archiving on: the checkpoint opens a segment, behind its long header.
    assert.equal(walEndBefore(0x6000028n), 0x6000000n);
    // A record at the top of any other page sits behind a short header.
    assert.equal(walEndBefore(0x1528018n), 0x1528000n);
    // Anywhere else, the record's own start.
    assert.equal(walEndBefore(0x1527da8n), 0x1527da8n);
  });
});
