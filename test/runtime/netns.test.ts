// Node network namespaces for real on this machine: a veth pair with a /30 of 10.213.0.0/16,
// repaired when broken, a slot held by another namespace skipped, reachable from the host only
// through the veth, and nothing left after removal. Every namespace made here is removed in
// after(), even when a test fails half-way.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { after, describe, it } from "node:test";
import { promisify } from "node:util";
import { newId } from "../../src/domain/ids.ts";
import { waitFor } from "../../src/runtime/cgroup-fs.ts";
import { CgroupV1Runtime } from "../../src/runtime/cgroup-v1.runtime.ts";
import {
  CLAIMS_DIR,
  endNetnsProcesses,
  ensureNodeNet,
  inNetns,
  netnsExists,
  netnsId,
  netnsPids,
  nodeNetNames,
  preferredSlot,
  removeNodeNet,
  slotAddresses,
} from "../../src/runtime/netns.ts";
import { probeIsolation } from "../../src/runtime/probe.ts";
import { wrapCommand } from "../../src/runtime/spawn.ts";

const run = promisify(execFile);
const probe = await probeIsolation();
const PARENT = `cellar-test-netns-${process.pid}`;

const linkExists = (name: string) =>
  run("ip", ["link", "show", name]).then(
    () => true,
    () => false,
  );

describe("names and addresses (pure)", () => {
  it("derives short deterministic names from the instance id", () => {
    const n = nodeNetNames("inst-0a1b2c3d4e5f60718293");
    assert.deepEqual(n, { ns: "cn-0a1b2c3d4e5f", hostIf: "vh0a1b2c3d4e", nodeIf: "vn0a1b2c3d4e" });
    assert.ok(n.hostIf.length <= 15);
    const hashed = nodeNetNames("inst-not-hex");
    assert.match(hashed.ns, /^cn-[0-9a-f]{12}$/);
    assert.deepEqual(hashed, nodeNetNames("inst-not-hex"));
  });

  it("gives each slot a /30: .1 on the host, .2 inside", () => {
    assert.deepEqual(slotAddresses(0), { hostAddress: "10.213.0.1", innerAddress: "10.213.0.2" });
    assert.deepEqual(slotAddresses(16383), { hostAddress: "10.213.255.253", innerAddress: "10.213.255.254" });
    assert.equal(preferredSlot("inst-x"), preferredSlot("inst-x"));
  });
});

describe(
  "node network namespaces on this machine",
  { skip: probe.netns.ok ? false : probe.netns.detail },
  () => {
    const ids: string[] = [];
    const fakeClaims: string[] = [];
    const fresh = () => {
      const id = newId("inst");
      ids.push(id);
      return id;
    };

    after(async () => {
      for (const id of ids) {
        const { ns } = nodeNetNames(id);
        // A test that failed may have left a process inside: kill it so the namespace can go.
        for (const pid of await netnsPids(ns)) process.kill(pid, "SIGKILL");
        await removeNodeNet(id).catch(() => undefined);
      }
      for (const f of fakeClaims) await fs.rm(f, { force: true });
      const rt = new CgroupV1Runtime({ dirs: probe.layout.v1, parent: PARENT });
      for (const name of await rt.listSandboxes()) await rt.removeSandbox(name);
      for (const dir of new Set(Object.values(probe.layout.v1)))
        await fs.rmdir(path.join(dir, PARENT)).catch(() => {});
    });

    it("creates the pair, is idempotent, and routes the inner address to its veth", async (t) => {
      const id = fresh();
      const t0 = performance.now();
      const net1 = await ensureNodeNet(id);
      const created = performance.now() - t0;
      const t1 = performance.now();
      const net2 = await ensureNodeNet(id);
      t.diagnostic(
        `netns + veth setup ${created.toFixed(0)} ms; check of an existing one ${(performance.now() - t1).toFixed(0)} ms`,
      );
      assert.equal(net1.changed, true);
      assert.equal(net2.changed, false);
      assert.equal(net2.slot, net1.slot);
      const { stdout } = await run("ip", ["route", "get", net1.innerAddress]);
      assert.match(stdout, new RegExp(`dev ${net1.hostIf} `));
      const inside = (await run("ip", ["-n", net1.ns, "-4", "-o", "addr"])).stdout;
      assert.match(inside, /lo\s+inet 127\.0\.0\.1/);
      assert.match(
        inside,
        new RegExp(`${net1.nodeIf}\\s+inet ${net1.innerAddress.replace(/\./g, "\\.")}/30`),
      );
    });

    it("repairs a deleted veth on the same slot", async () => {
      const id = fresh();
      const before = await ensureNodeNet(id);
      await run("ip", ["link", "delete", before.hostIf]);
      const after = await ensureNodeNet(id, { preferSlot: before.slot });
      assert.equal(after.changed, true);
      assert.equal(after.slot, before.slot);
      assert.ok(await linkExists(after.hostIf));
    });

    it("skips a slot claimed by another live namespace", async () => {
      const other = fresh();
      const otherNet = await ensureNodeNet(other);
      const id = fresh();
      // The slot this id would pick first is held by `other`'s namespace.
      const wanted = preferredSlot(id);
      const claim = path.join(CLAIMS_DIR, String(wanted));
      if (wanted !== otherNet.slot) {
        await fs.writeFile(claim, otherNet.ns, { flag: "wx" });
        fakeClaims.push(claim);
      }
      const mine = await ensureNodeNet(id);
      assert.notEqual(mine.slot, wanted);
      assert.notEqual(mine.slot, otherNet.slot);
    });

    it("runs a command in sandbox then namespace then as postgres, reachable only through the veth", async () => {
      const id = fresh();
      const n = await ensureNodeNet(id);
      const rt = new CgroupV1Runtime({ dirs: probe.layout.v1, parent: PARENT });
      await rt.ensureSandbox("netns-probe", { memoryBytes: 64 * 1024 * 1024 });
      const script = `readlink /proc/self/ns/net; id -un; cat /proc/self/cgroup`;
      const inner = inNetns(n.ns, ["runuser", "-u", "postgres", "--", "sh", "-c", script]);
      const argv = wrapCommand(rt, "netns-probe", inner[0]!, inner.slice(1));
      const { stdout } = await run(argv[0]!, argv.slice(1));
      const [nsLine, user, ...cgroups] = stdout.trim().split("\n");
      assert.equal(nsLine, await netnsId(n.ns));
      assert.notEqual(nsLine, await fs.readlink("/proc/self/ns/net"));
      assert.equal(user, "postgres");
      assert.ok(
        cgroups.some((l) => /:memory:.*\/netns-probe$/.test(l)),
        cgroups.join("\n"),
      );

      // A listener inside answers on the inner address from the host.
      const server = execFile("nsenter", [
        `--net=/run/netns/${n.ns}`,
        "--",
        "python3",
        "-c",
        listener(n.innerAddress),
      ]);
      try {
        await connectWithin(n.innerAddress, 5432, 5000);
      } finally {
        server.kill("SIGKILL");
      }
    });

    it("ends what a killed agent left inside: SIGTERM, then SIGKILL for what ignores it", async () => {
      const id = fresh();
      const n = await ensureNodeNet(id);
      // One process leaves on SIGTERM (as pgBackRest does), one ignores it.
      const polite = execFile("ip", ["netns", "exec", n.ns, "sleep", "600"]);
      const stubborn = execFile("ip", [
        "netns",
        "exec",
        n.ns,
        "sh",
        "-c",
        "trap '' TERM; while :; do sleep 1; done",
      ]);
      const exited = (c: typeof polite) =>
        new Promise<NodeJS.Signals | null>((r) => c.on("exit", (_code, sig) => r(sig)));
      const politeExit = exited(polite);
      const stubbornExit = exited(stubborn);
      await waitFor(async () => (await netnsPids(n.ns)).length >= 3, 5000);
      const found = await endNetnsProcesses(n.ns, 500);
      assert.ok(found.includes(polite.pid!) && found.includes(stubborn.pid!), `found ${found.join(",")}`);
      assert.equal(await politeExit, "SIGTERM");
      assert.equal(await stubbornExit, "SIGKILL");
      assert.deepEqual(await netnsPids(n.ns), []);
      await removeNodeNet(id);
      assert.equal(await netnsExists(n.ns), false);
    });

    it("removes the pair, the namespace and the claim", async () => {
      const id = fresh();
      const n = await ensureNodeNet(id);
      await removeNodeNet(id);
      assert.equal(await netnsExists(n.ns), false);
      assert.equal(await linkExists(n.hostIf), false);
      const claims = await fs.readdir(CLAIMS_DIR);
      for (const c of claims)
        assert.notEqual((await fs.readFile(path.join(CLAIMS_DIR, c), "utf8")).trim(), n.ns);
      await removeNodeNet(id); // again: nothing to do
    });
  },
);

const listener = (address: string) =>
  [
    "import socket",
    "s = socket.socket()",
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)",
    `s.bind(("${address}", 5432))`,
    "s.listen()",
    "c, _ = s.accept()",
    "c.sendall(b'hi')",
  ].join("\n");

async function connectWithin(host: string, port: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const reply = await new Promise<string | Error>((resolve) => {
      const sock = net.connect({ host, port, timeout: 1000 }, () => undefined);
      let data = "";
      sock.on("data", (d) => (data += d.toString()));
      sock.on("end", () => resolve(data));
      sock.on("error", (err) => resolve(err));
      sock.on("timeout", () => {
        sock.destroy();
        resolve(new Error("timeout"));
      });
    });
    if (reply === "hi") return;
    if (Date.now() > deadline) throw new Error(`no answer from ${host}:${port}: ${String(reply)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
