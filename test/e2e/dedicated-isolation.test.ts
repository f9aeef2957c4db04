// What a Dedicated node gets on this machine, checked on the kernel rather than in Cellar's
// records: its own network namespace (reachable only through its gateway), its own loop-mounted
// filesystem of the plan's size, its data encrypted at rest under its own key (a row's marker
// is absent from the raw image), all re-made after an agent restart, and nothing left after
// delete: no namespace, veth, mount or loop device.
import assert from "node:assert/strict";
import { execFile, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { PostgresDriver } from "../../src/agent/postgres.driver.ts";
import { shortRunDir } from "../../src/main/agent-main.ts";
import { createIsolationRuntime } from "../../src/runtime/factory.ts";
import { listNodeNetns, netnsId, netnsOfPid, nodeNetNames } from "../../src/runtime/netns.ts";
import { probeIsolation } from "../../src/runtime/probe.ts";
import { PostgresInstance } from "../../src/engines/postgresql/instance.ts";
import { queryOnce } from "../../src/engines/postgresql/superuser.ts";
import { encryptionOf } from "../../src/runtime/fscrypt.ts";
import { connectVerified, startCluster, type Cluster } from "../support/cluster.ts";
import { imageHolds } from "../support/raw-image.ts";

const run = promisify(execFile);
const probe = await probeIsolation();
const HOST = "e2e-iso-d1";
const ADDRESS = "127.43.0.1";
const GiB = 1024 ** 3;
const skip =
  probe.netns.ok && probe.loopVolumes.ok ? false : `${probe.netns.detail}; ${probe.loopVolumes.detail}`;

/** Mounts whose mount point is under `dir`, from the kernel's table. */
async function mountsUnder(dir: string): Promise<string[]> {
  const { stdout } = await run("findmnt", ["-rn", "-o", "TARGET"]);
  return stdout.split("\n").filter((t) => t.startsWith(dir + "/"));
}

async function loopsUnder(dir: string): Promise<string[]> {
  const { stdout } = await run("losetup", ["--list", "--raw", "--noheadings", "-O", "NAME,BACK-FILE"]);
  return stdout.split("\n").filter((l) => l.includes(dir + "/"));
}

async function linkExists(name: string): Promise<boolean> {
  return run("ip", ["link", "show", name]).then(
    () => true,
    () => false,
  );
}

/** Connects to a loopback address: refused or not (no egress proxy on 127/8). */
function tcpRefused(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    sock.once("connect", () => {
      sock.destroy();
      resolve(false);
    });
    sock.once("error", (err: NodeJS.ErrnoException) => resolve(err.code === "ECONNREFUSED"));
  });
}

describe("Dedicated node isolation on this machine", { skip }, () => {
  let cl: Cluster;
  let url = "";
  let dbId = "";
  let node = { id: "", port: 0 };
  let stateDir = "";
  const nodeDir = () => path.join(stateDir, "instances", node.id, "node");
  /** The node's volume: mounted here, its image beside it, its base dir node/ encrypted. */
  const volumeDir = () => path.join(stateDir, "instances", node.id, "volume");

  const postmasterPid = async () =>
    Number((await fs.readFile(path.join(nodeDir(), "pgdata", "postmaster.pid"), "utf8")).split("\n")[0]);

  const agent = (): ChildProcess => {
    const p = cl.fleet.processOf(HOST);
    assert.ok(p?.pid, "the agent runs");
    return p;
  };
  const stopAgent = async (sig: NodeJS.Signals) => {
    const p = agent();
    const exited = new Promise<void>((resolve) => p.once("exit", () => resolve()));
    p.kill(sig);
    await exited;
  };
  const query = async (sql: string) => {
    const client = await connectVerified(url, await cl.regionCa());
    try {
      return (await client.query(sql)).rows;
    } finally {
      await client.end();
    }
  };
  /** The agent's own way in: the node's unix socket, as the superuser. */
  const superuser = () =>
    new PostgresInstance({
      id: node.id,
      baseDir: nodeDir(),
      listenAddress: ADDRESS,
      port: node.port,
      socketDir: path.join(shortRunDir(stateDir), node.id.replace(/^inst-/, "")),
    }).superuserConfig();
  const answersAgain = () =>
    cl.waitFor(
      "the database to answer through its gateway",
      () => query("SELECT 1").then(() => true),
      30_000,
    );
  /** Restarts the agent and waits for its report of a running node and gateway. */
  const restartAgent = async () => {
    const since = new Date();
    cl.fleet.startAgent(HOST);
    await cl.waitFor("the restarted agent to report both instances running", async () => {
      const { rows } = await cl.controller.deps.db.query(
        "SELECT count(*)::int AS n FROM instances WHERE database_id = $1 AND status = 'running' AND observed_at > $2",
        [dbId, since],
      );
      return rows[0].n === 2 ? true : undefined;
    });
    await answersAgain();
  };

  before(async () => {
    cl = await startCluster({ subnet: 43, hosts: [{ name: HOST, pool: "dedicated", az: "osc-fr1-b" }] });
    stateDir = path.join(cl.dataDir, "hosts", HOST);
  });
  after(async () => {
    if (!cl) return;
    // A test that failed after killing the agent leaves its node up: stop it and give the
    // mounts and namespaces back before the data dir goes.
    await cl.fleet.stop();
    const runtime = await createIsolationRuntime(probe, { parent: `cellar-${HOST}` });
    const driver = new PostgresDriver({
      stateDir,
      runDir: shortRunDir(stateDir),
      runtime,
      exclusiveCpus: [],
    });
    await driver.stopAll().catch((err: Error) => console.error(`cleanup: ${err.message}`));
    await cl.close();
  });

  it("provisions a Dedicated Starter whose postmaster runs in a namespace of its own", async () => {
    const res = await cl.api("POST", "/v1/databases", {
      database: { name: "iso-prod", technology: "postgresql-ng", plan: "postgresql-dr-starter-4096" },
    });
    assert.equal(res.status, 201, JSON.stringify(res.json));
    dbId = res.json.database.id;
    url = await cl.waitFor("the database to run and publish its URL", async () => {
      const vars = (await cl.api("GET", "/v1/apps/iso-prod/variables")).json.variables as any[];
      return vars.find((v) => v.name === "SCALINGO_POSTGRESQL_URL")?.value as string | undefined;
    });
    const { rows } = await cl.controller.deps.db.query(
      "SELECT id, port, status_message FROM instances WHERE database_id = $1 AND kind = 'node'",
      [dbId],
    );
    node = { id: rows[0].id, port: rows[0].port };
    assert.doesNotMatch(rows[0].status_message, /no network namespace|not enforced/);

    const pid = await postmasterPid();
    const { ns } = nodeNetNames(node.id);
    assert.notEqual(await netnsOfPid(pid), await fs.readlink("/proc/self/ns/net"));
    assert.equal(await netnsOfPid(pid), await netnsId(ns), `the postmaster is in ${ns}`);
  });

  it("is reachable through its gateway only: verify-full works, the host address refuses", async () => {
    assert.deepEqual(await query("SELECT 1 AS one"), [{ one: 1 }]);
    assert.equal(await tcpRefused(ADDRESS, node.port), true, "nothing listens on the host address");
    const inner = JSON.parse(
      await fs.readFile(path.join(stateDir, "instances", node.id, "network.json"), "utf8"),
    ) as { innerAddress: string; vpc: { address: string } };
    assert.match(inner.innerAddress, /^10\.213\.\d+\.\d+$/);
    const { rows } = await cl.controller.deps.db.query(
      "SELECT id FROM instances WHERE database_id = $1 AND kind = 'gateway'",
      [dbId],
    );
    const cfg = await fs.readFile(
      path.join(stateDir, "instances", rows[0].id, "gateway", "haproxy.cfg"),
      "utf8",
    );
    // The gateway runs in the database's own network and reaches the node there.
    assert.ok(
      cfg.includes(`${inner.vpc.address}:${node.port}`),
      "the gateway forwards to the node's address in the database's network",
    );
  });

  it("keeps its data on a filesystem of its own, of the plan's size", async () => {
    const pgdata = path.join(nodeDir(), "pgdata");
    const { stdout } = await run("findmnt", ["-n", "-o", "SOURCE,FSTYPE,TARGET", "--target", pgdata]);
    const [source, fstype, target] = stdout.trim().split(/\s+/);
    assert.match(source ?? "", /^\/dev\/loop\d+$/);
    assert.equal(fstype, "ext4");
    assert.equal(target, volumeDir());
    assert.equal(await fs.realpath(nodeDir()), path.join(volumeDir(), "node"));
    const s = await fs.statfs(pgdata);
    const size = s.blocks * s.bsize;
    // 80 GB plan: ext4 keeps ~2% for its inode tables and journal.
    assert.ok(size > 76 * GiB && size <= 80 * GiB, `filesystem of ${(size / GiB).toFixed(1)} GiB`);
    const image = await fs.stat(`${volumeDir()}.img`);
    assert.equal(image.size, 80 * GiB);
    assert.ok(image.blocks * 512 < 256 * 1024 * 1024, "the image is sparse");
    // Reported disk use is what the volume holds, not the image's apparent 80 GB.
    const usage = await cl.waitFor("a disk usage report", async () => {
      const { rows } = await cl.controller.deps.db.query("SELECT usage FROM instances WHERE id = $1", [
        node.id,
      ]);
      return (rows[0].usage.disk_bytes as number | undefined) || undefined;
    });
    assert.ok(usage < GiB, `disk_bytes ${usage}`);
  });

  it("encrypts its data at rest under its own key: a marker row is absent from the raw image", async () => {
    const view = async () => (await cl.api("GET", `/api/databases/${dbId}`)).json.database;
    await cl.waitFor("encryption_at_rest: true", async () =>
      (await view()).encryption_at_rest ? true : undefined,
    );
    const status = (await cl.api("GET", `/api/databases/${dbId}/instances_status`)).json;
    assert.match(JSON.stringify(status), /AES-256-XTS\/AES-256-CTS, key present/);
    const policy = await encryptionOf(path.join(volumeDir(), "node"));
    assert.equal(policy.state, "encrypted");
    assert.equal(policy.key, "present");

    const marker = `cellar-e2e-marker-${dbId}`;
    await query(`CREATE TABLE secrets (v text); INSERT INTO secrets VALUES ('${marker}')`);
    // The row's page written to its table's file, not only to the WAL (both are on the volume).
    await queryOnce(superuser(), "CHECKPOINT");
    await run("sync");
    assert.deepEqual(await query("SELECT v FROM secrets"), [{ v: marker }]);
    const image = `${volumeDir()}.img`;
    // The control: the scan does read the image (the filesystem's own root entries are plain).
    assert.equal(await imageHolds(image, "lost+found"), true, "the raw scan reads the image");
    assert.equal(await imageHolds(image, marker), false, "the marker is not on disk in clear");
  });

  it("survives kill -9 of its agent (adopted) and a clean restart (re-mounted, same data)", async () => {
    await query("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)");
    const pid = await postmasterPid();
    await stopAgent("SIGKILL");
    await restartAgent();
    assert.equal(await postmasterPid(), pid, "the same postmaster serves");

    await stopAgent("SIGTERM");
    // A stopped agent gives the host's resources back; the data stays in the image.
    assert.deepEqual(await mountsUnder(stateDir), []);
    assert.equal((await listNodeNetns()).includes(nodeNetNames(node.id).ns), false);
    await restartAgent();
    assert.deepEqual(await query("SELECT v FROM kept"), [{ v: 42 }]);
    // Mounted again, its key added again: the encrypted rows read back.
    assert.equal((await query("SELECT count(*)::int AS n FROM secrets"))[0].n, 1);
    assert.equal((await encryptionOf(path.join(volumeDir(), "node"))).key, "present");
    assert.equal(await netnsOfPid(await postmasterPid()), await netnsId(nodeNetNames(node.id).ns));
  });

  it("leaves no namespace, veth, mount or loop device after delete", async () => {
    const res = await cl.api("DELETE", `/v1/apps/${dbId}?current_name=iso-prod`);
    assert.equal(res.status, 204, JSON.stringify(res.json));
    await cl.waitFor("the database to be deleted", async () => {
      const { rows } = await cl.controller.deps.db.query("SELECT phase FROM databases WHERE id = $1", [dbId]);
      return rows[0].phase === "deleted" ? true : undefined;
    });
    const names = nodeNetNames(node.id);
    assert.equal((await listNodeNetns()).includes(names.ns), false, "no namespace");
    assert.equal(await linkExists(names.hostIf), false, "no veth");
    assert.deepEqual(await mountsUnder(stateDir), [], "no mount");
    assert.deepEqual(await loopsUnder(stateDir), [], "no loop device");
    assert.deepEqual(await fs.readdir(path.join(stateDir, "instances")), []);
  });
});
