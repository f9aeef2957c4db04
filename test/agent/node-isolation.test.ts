// NodeIsolation: what a Dedicated node gets, what a Shared one does not, what is said when the
// host cannot, how a gateway finds its node's inner address (even while it is being made), and
// a volume that can only grow offline, and each node's base dir encrypted at rest under its own
// key where the filesystem allows. Real namespaces and loop volumes where this host allows.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs, { type FileHandle } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { NodeIsolation, type NodeIsolationFacts } from "../../src/agent/node-isolation.ts";
import { newId } from "../../src/domain/ids.ts";
import type { NodeSpec } from "../../src/reconciler/instance-spec.ts";
import { netnsExists, nodeNetNames, removeNodeNet } from "../../src/runtime/netns.ts";
import { probeIsolation } from "../../src/runtime/probe.ts";
import { detachVolume, ensureVolume, removeVolume } from "../../src/runtime/volume.ts";

const probe = await probeIsolation();
const NONE: NodeIsolationFacts = {
  netns: { ok: false, detail: "not root: cannot create network namespaces" },
  loopVolumes: { ok: false, detail: "not root: cannot attach loop devices or mount" },
};

const KEY = randomBytes(64).toString("base64");

const spec = (model: "shared" | "dedicated", diskGb = 0.05) =>
  ({
    model,
    listen: { address: "127.44.0.1", port: 20001 },
    limits: { memoryMb: 512, vcpu: 1, diskGb, exclusiveCpus: model === "dedicated" },
  }) as NodeSpec;

const gateway = (backends: string[]) => ({
  listen: { host: "127.44.0.1", port: 20000 },
  backends: backends.map((name) => ({ name, host: "127.44.0.1", port: 20001 })),
  maxConnections: 100,
});

describe("NodeIsolation", () => {
  let base: string;
  const ids: string[] = [];
  const hostVolumes: string[] = [];
  const dirOf = (id: string) => path.join(base, id);
  const fresh = () => {
    const id = newId("inst");
    ids.push(id);
    return id;
  };

  before(async () => {
    base = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-nodeiso-"));
  });
  after(async () => {
    for (const id of ids) {
      await removeNodeNet(id).catch(() => undefined);
      await removeVolume(path.join(dirOf(id), "node")).catch(() => undefined);
      await removeVolume(path.join(dirOf(id), "volume")).catch(() => undefined);
    }
    for (const v of hostVolumes) await removeVolume(v).catch(() => undefined);
    await fs.rm(base, { recursive: true, force: true });
  });

  it("leaves a Shared node as it is, its base dir plain where the filesystem cannot encrypt", async () => {
    const iso = new NodeIsolation({ dirOf, facts: () => Promise.resolve(NONE) });
    const id = fresh();
    assert.equal(iso.begin(id, spec("shared")), null);
    await fs.mkdir(dirOf(id));
    const placement = await iso.prepare(id, spec("shared"), () => Promise.resolve(), KEY);
    assert.equal(placement.listenAddress, "127.44.0.1");
    assert.deepEqual(placement.wrap(["pg_ctl", "start"]), ["pg_ctl", "start"]);
    assert.deepEqual(placement.notes, []);
    // This machine's root filesystem has no ext4 encryption feature: said, not pretended.
    const why = new RegExp(`the filesystem of ${dirOf(id)} has no ext4 encryption feature`);
    assert.equal(placement.atRest?.encrypted, false);
    assert.match(placement.atRest?.detail ?? "", why);
    assert.match((await iso.atRest(id)).detail, why);
    // Its backups' verification copies stay plain as well.
    assert.deepEqual(await iso.copyKey(id), { encrypted: false });
    assert.deepEqual(await fs.readdir(dirOf(id)), ["node"], "only its base dir made");
  });

  it("says what a Dedicated node lacks when the host cannot isolate it", async () => {
    const iso = new NodeIsolation({ dirOf, facts: () => Promise.resolve(NONE) });
    const id = fresh();
    iso.begin(id, spec("dedicated"));
    const placement = await iso.prepare(id, spec("dedicated"), () => Promise.resolve());
    assert.equal(placement.listenAddress, "127.44.0.1");
    assert.deepEqual(placement.wrap(["pg_ctl"]), ["pg_ctl"]);
    assert.match(iso.statusNote(id), /^isolation: volume quota not enforced: plain directory \(not root/);
    assert.match(iso.statusNote(id), /no network namespace \(not root: cannot create network namespaces\)/);
    assert.ok((await fs.stat(path.join(dirOf(id), "node"))).isDirectory());
    assert.equal(await iso.usedBytes(id), null, "no volume: the caller measures the directory");
  });

  it("points a gateway at the recorded inner address of a local node only", async () => {
    const iso = new NodeIsolation({ dirOf, facts: () => Promise.resolve(NONE) });
    const local = fresh();
    await fs.mkdir(dirOf(local), { recursive: true });
    const record = { ns: nodeNetNames(local).ns, slot: 7, innerAddress: "10.213.0.30" };
    await fs.writeFile(path.join(dirOf(local), "network.json"), JSON.stringify(record));
    const out = await iso.gatewaySpec(gateway([local, "inst-elsewhere", "not an id"]));
    assert.deepEqual(
      out.backends.map((b) => b.host),
      ["10.213.0.30", "127.44.0.1", "127.44.0.1"],
    );
    assert.equal(out.backends[0]!.port, 20001);
  });

  describe("on this machine", { skip: probe.netns.ok ? false : probe.netns.detail }, () => {
    it("makes a gateway converging in parallel wait for its node's namespace", async () => {
      const facts = () => Promise.resolve({ netns: probe.netns, loopVolumes: NONE.loopVolumes });
      const iso = new NodeIsolation({ dirOf, facts });
      const id = fresh();
      iso.begin(id, spec("dedicated"));
      // The gateway asks before the namespace exists, as the agent's parallel converge does.
      const gw = iso.gatewaySpec(gateway([id]));
      const placement = await iso.prepare(id, spec("dedicated"), () => Promise.resolve());
      assert.match(placement.listenAddress, /^10\.213\./);
      assert.equal((await gw).backends[0]!.host, placement.listenAddress);
      assert.deepEqual(placement.wrap(["pg_ctl"]), [
        "nsenter",
        `--net=/run/netns/${nodeNetNames(id).ns}`,
        "--",
        "pg_ctl",
      ]);
      let stops = 0;
      await iso.release(id, () => Promise.resolve(void stops++), { keepData: false });
      assert.equal(stops, 1, "the node is stopped before its namespace goes");
      assert.equal(await netnsExists(nodeNetNames(id).ns), false);
    });
  });

  describe("loop volumes", { skip: probe.loopVolumes.ok ? false : probe.loopVolumes.detail }, () => {
    it("mounts the node's base dir, and grows it offline by stopping the node", async (t) => {
      const facts = () => Promise.resolve({ netns: NONE.netns, loopVolumes: probe.loopVolumes });
      const iso = new NodeIsolation({ dirOf, facts });
      const id = fresh();
      const nodeDir = path.join(dirOf(id), "node");
      const first = await iso.prepare(id, spec("dedicated", 0.05), () => Promise.resolve(), KEY);
      assert.deepEqual(first.atRest, { encrypted: true, detail: "AES-256-XTS/AES-256-CTS, key present" });
      // A copy of its data (a backup verification's) is to be encrypted under the same key.
      assert.deepEqual(await iso.copyKey(id), { encrypted: true, key: Buffer.from(KEY, "base64") });
      assert.ok((await iso.usedBytes(id))! < 8 * 1024 * 1024);
      // An open file keeps the filesystem busy, as a running postmaster does.
      let busy: FileHandle | null = await fs.open(path.join(nodeDir, "held"), "w");
      let stops = 0;
      const stopNode = async () => {
        stops++;
        await busy?.close();
        busy = null;
      };
      await fs.writeFile(path.join(nodeDir, "kept"), "data");
      try {
        await iso.prepare(id, spec("dedicated", 0.1), stopNode, KEY);
      } finally {
        await busy?.close();
      }
      const s = await fs.statfs(nodeDir);
      assert.ok(s.blocks * s.bsize > 80 * 1024 * 1024, "grown to the new size");
      // Online growth needs CAP_SYS_RESOURCE; without it (this machine) the node had to be stopped.
      t.diagnostic(`node stopped ${stops} time(s) to grow its volume`);
      // Remounted to grow: the key was added again.
      assert.equal(await fs.readFile(path.join(nodeDir, "kept"), "utf8"), "data");
      assert.equal((await iso.atRest(id)).encrypted, true);

      // An agent's stop: the key goes out with the mount; its next start adds it again.
      await iso.release(id, () => Promise.resolve(), { keepData: true });
      assert.equal(await fs.stat(nodeDir).catch(() => null), null, "unmounted");
      await iso.prepare(id, spec("dedicated", 0.1), () => Promise.resolve(), undefined);
      // Encrypted, but the key was not given again: no key for a copy (which is then not made).
      assert.deepEqual(await iso.copyKey(id), { encrypted: true, key: null });
      await iso.release(id, () => Promise.resolve(), { keepData: true });
      await iso.prepare(id, spec("dedicated", 0.1), () => Promise.resolve(), KEY);
      assert.equal(await fs.readFile(path.join(nodeDir, "kept"), "utf8"), "data");

      await iso.release(id, () => Promise.resolve(), { keepData: false });
      assert.equal(await fs.stat(nodeDir).catch(() => null), null);
      assert.equal(
        await fs.stat(path.join(dirOf(id), "volume.img")).catch(() => null),
        null,
        "image deleted",
      );
    });

    it("keeps a volume made before encryption at rest working, reported not encrypted", async () => {
      const facts = () => Promise.resolve({ netns: NONE.netns, loopVolumes: probe.loopVolumes });
      const iso = new NodeIsolation({ dirOf, facts });
      const id = fresh();
      const nodeDir = path.join(dirOf(id), "node");
      // As the agent made them before: an image beside node/, mounted at node/ itself.
      await ensureVolume(nodeDir, 0.05, { loop: true });
      await fs.writeFile(path.join(nodeDir, "old"), "data");
      await detachVolume(nodeDir);
      const placement = await iso.prepare(id, spec("dedicated", 0.05), () => Promise.resolve(), KEY);
      assert.equal(await fs.readFile(path.join(nodeDir, "old"), "utf8"), "data");
      assert.deepEqual(placement.atRest, {
        encrypted: false,
        detail: "its volume was made before encryption at rest (no policy on it)",
      });
      assert.deepEqual(await iso.copyKey(id), { encrypted: false });
      await iso.release(id, () => Promise.resolve(), { keepData: false });
    });

    it("encrypts a Shared node's base dir when the host's filesystem can", async () => {
      // A host whose instances live on an ext4 made with -O encrypt (a loop volume here).
      const hostFs = await ensureVolume(path.join(base, "host-fs"), 0.05, { loop: true, encrypt: true });
      hostVolumes.push(hostFs.path);
      const onHost = (id: string) => path.join(hostFs.path, id);
      const iso = new NodeIsolation({ dirOf: onHost, facts: () => Promise.resolve(NONE) });
      const id = fresh();
      await fs.mkdir(onHost(id));
      const placement = await iso.prepare(id, spec("shared"), () => Promise.resolve(), KEY);
      assert.equal(placement.atRest?.encrypted, true, placement.atRest?.detail);
      assert.deepEqual(await iso.copyKey(id), { encrypted: true, key: Buffer.from(KEY, "base64") });
      await fs.writeFile(path.join(onHost(id), "node", "marker"), "secret");
      // Released (the agent stops, or the node goes): its key leaves the filesystem's keyring.
      await iso.release(id, () => Promise.resolve(), { keepData: true });
      await assert.rejects(fs.readFile(path.join(onHost(id), "node", "marker")), /ENOENT|ENOKEY/);
      const again = await iso.prepare(id, spec("shared"), () => Promise.resolve(), KEY);
      assert.equal(again.atRest?.encrypted, true);
      assert.equal(await fs.readFile(path.join(onHost(id), "node", "marker"), "utf8"), "secret");
    });
  });
});
