// A database's network for real on this machine: its namespace on the public bridge, deny by
// default at the edge (nftables inside the namespace), allowed sources let through within a
// fraction of a second of a change, nodes attached on the database's own bridge and never
// reachable from outside, and nothing left after removal.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { newId } from "../../src/domain/ids.ts";
import { applyEdge, edgeSources, mergeCidrs, renderEdge } from "../../src/runtime/nft.ts";
import {
  deleteNetns,
  ensureNodeNet,
  inNetns,
  ip,
  netnsExists,
  nodeNetNames,
  removeNodeNet,
} from "../../src/runtime/netns.ts";
import { probeIsolation } from "../../src/runtime/probe.ts";
import {
  attachNode,
  controlAddress,
  ensureVpc,
  publicBridgeName,
  removePublicBridgeIfUnused,
  removeVpcIfUnused,
  UPLINK,
  vpcNames,
  vpcUse,
  type VpcSpec,
} from "../../src/runtime/vpc.ts";
import { hostLinks, NetLab } from "../support/net-lab.ts";

const probe = await probeIsolation();
const PUBLIC = "198.19.201.0/24";
const PORT = 5432;

describe("edge rules (pure)", () => {
  it("merges covered blocks, since nft refuses overlapping intervals", () => {
    assert.deepEqual(mergeCidrs(["10.0.0.0/8", "10.1.0.0/16", "192.0.2.7/32", "10.0.0.0/8"]), [
      "10.0.0.0/8",
      "192.0.2.7/32",
    ]);
    assert.deepEqual(mergeCidrs(["0.0.0.0/0", "203.0.113.0/24"]), ["0.0.0.0/0"]);
  });

  it("denies everything when no source is allowed: no accept rule at all", () => {
    const text = renderEdge({ uplink: "uplink", ports: [], allow: [], control: [] });
    assert.match(text, /policy drop/);
    assert.doesNotMatch(text, /saddr @allowed accept/);
    assert.doesNotMatch(text, /elements/);
  });

  it("refuses names and ports that would change the ruleset's meaning", () => {
    assert.throws(() => renderEdge({ uplink: 'x" accept', ports: [5432], allow: [], control: [] }));
    assert.throws(() => renderEdge({ uplink: "uplink", ports: [70000], allow: [], control: [] }));
  });
});

/** A TCP server inside `ns` answering "hello" to whoever connects. */
function listenIn(ns: string, host: string, port: number): Promise<ChildProcess> {
  const js = `require("node:net").createServer((s) => s.end("hello\\n")).listen(${port}, "${host}", () => console.log("up"))`;
  const [cmd, ...args] = inNetns(ns, [process.execPath, "-e", js]);
  const child = spawn(cmd!, args, { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    child.stdout.once("data", () => resolve(child));
    child.once("exit", (code) => reject(new Error(`listener exited with ${code}`)));
  });
}

describe("a database network on this machine", { skip: probe.netns.ok ? false : probe.netns.detail }, () => {
  const lab = new NetLab(PUBLIC);
  const dbA = newId("ad");
  const dbB = newId("ad");
  const nodeA = newId("inst");
  const specA: VpcSpec = {
    databaseId: dbA,
    range: "10.20.0.0/25",
    publicNetwork: PUBLIC,
    publicAddress: "198.19.201.10",
  };
  // Same private range as A: each network is its own namespace, so ranges may repeat.
  const specB: VpcSpec = {
    databaseId: dbB,
    range: "10.20.0.0/25",
    publicNetwork: PUBLIC,
    publicAddress: "198.19.201.11",
  };
  const servers: ChildProcess[] = [];
  let friend = "";
  let stranger = "";

  before(async () => {
    await ensureVpc(specA);
    await ensureVpc(specB);
    friend = await lab.client("friend", "198.19.201.50");
    stranger = await lab.client("stranger", "198.19.201.60");
  });

  after(async () => {
    for (const s of servers) s.kill("SIGKILL");
    await lab.close();
    await removeNodeNet(nodeA).catch(() => undefined);
    for (const db of [dbA, dbB]) await deleteNetns(vpcNames(db).ns);
    await removePublicBridgeIfUnused(PUBLIC);
  });

  it("denies every source by default, even with something listening", async () => {
    servers.push(await listenIn(vpcNames(dbA).ns, specA.publicAddress, PORT));
    assert.equal((await lab.tcp(friend, specA.publicAddress, PORT)).outcome, "refused");
    assert.equal((await lab.tcp(null, specA.publicAddress, PORT)).outcome, "refused");
  });

  it("lets allowed sources and the control plane through, on the database's port only", async () => {
    const { ns } = vpcNames(dbA);
    await applyEdge(ns, {
      uplink: UPLINK,
      ports: [PORT],
      allow: ["198.19.201.48/29"],
      control: [`${controlAddress(PUBLIC)}/32`],
    });
    assert.deepEqual(await edgeSources(ns), { allowed: ["198.19.201.48/29"], control: ["198.19.201.1/32"] });
    assert.equal((await lab.tcp(friend, specA.publicAddress, PORT)).outcome, "data");
    assert.equal(
      (await lab.tcp(null, specA.publicAddress, PORT)).outcome,
      "data",
      "from the control address",
    );
    assert.equal((await lab.tcp(stranger, specA.publicAddress, PORT)).outcome, "refused");
    servers.push(await listenIn(ns, specA.publicAddress, PORT + 1));
    assert.equal(
      (await lab.tcp(friend, specA.publicAddress, PORT + 1)).outcome,
      "refused",
      "other ports stay shut",
    );
  });

  it("applies a change in one command, effective for the next connection, both ways", async () => {
    const { ns } = vpcNames(dbA);
    const base = { uplink: UPLINK, ports: [PORT], control: [`${controlAddress(PUBLIC)}/32`] };
    const timed = async (allow: string[]) => {
      const started = performance.now();
      await applyEdge(ns, { ...base, allow });
      return performance.now() - started;
    };
    // One nft transaction (~0.03 s idle); generous for a loaded CI machine.
    const add = await timed(["198.19.201.48/29", "198.19.201.60/32"]);
    assert.equal((await lab.tcp(stranger, specA.publicAddress, PORT)).outcome, "data");
    const remove = await timed(["198.19.201.48/29"]);
    assert.equal((await lab.tcp(stranger, specA.publicAddress, PORT)).outcome, "refused");
    assert.ok(add < 2000 && remove < 2000, `applied in ${Math.round(add)} and ${Math.round(remove)} ms`);
  });

  it("keeps another database's network shut to its neighbours and to the public side", async () => {
    servers.push(await listenIn(vpcNames(dbB).ns, specB.publicAddress, PORT));
    // From inside A's network (a tenant's own machine) to B: B's edge denies it.
    assert.equal((await lab.tcp(vpcNames(dbA).ns, specB.publicAddress, PORT)).outcome, "refused");
    assert.equal((await lab.tcp(friend, specB.publicAddress, PORT)).outcome, "refused");
  });

  it("attaches a node on the database's bridge: the gateway side reaches it, the outside never does", async () => {
    const net = await ensureNodeNet(nodeA);
    await attachNode(specA, nodeA, net.ns, "10.20.0.10");
    await attachNode(specA, nodeA, net.ns, "10.20.0.10"); // idempotent
    servers.push(await listenIn(net.ns, "10.20.0.10", PORT));
    assert.equal((await lab.tcp(vpcNames(dbA).ns, "10.20.0.10", PORT)).outcome, "data");
    // A public client that routes the private range through A's public address: not forwarded.
    await ip(["-n", friend, "route", "add", "10.20.0.0/25", "via", specA.publicAddress]);
    const direct = await lab.tcp(friend, "10.20.0.10", PORT, { connectMs: 800 });
    assert.ok(["timeout", "unreachable", "refused"].includes(direct.outcome), direct.outcome);
    // B uses the same range: its namespace never sees A's node.
    const fromB = await lab.tcp(vpcNames(dbB).ns, "10.20.0.10", PORT, { connectMs: 800 });
    assert.notEqual(fromB.outcome, "data");
    assert.deepEqual((await vpcUse(dbA)).ports.length, 1);
  });

  it("repairs a broken uplink and keeps the edge rules", async () => {
    const n = vpcNames(dbA);
    await ip(["link", "delete", n.hostIf]);
    await ensureVpc(specA);
    assert.equal((await lab.tcp(friend, specA.publicAddress, PORT)).outcome, "data");
    assert.equal((await lab.tcp(stranger, specA.publicAddress, PORT)).outcome, "refused");
  });

  it("is kept while a node or a process uses it, removed after, with the bridge", async () => {
    assert.equal(await removeVpcIfUnused(dbA, PUBLIC), false, "a node is attached and a server runs");
    for (const s of servers.splice(0)) {
      const exited = new Promise((r) => s.once("exit", r));
      s.kill("SIGKILL");
      await exited;
    }
    assert.equal(await removeVpcIfUnused(dbA, PUBLIC), false, "the node is still attached");
    await removeNodeNet(nodeA);
    assert.equal(await removeVpcIfUnused(dbA, PUBLIC), true);
    assert.equal(await removeVpcIfUnused(dbB, PUBLIC), true);
    assert.equal(await netnsExists(vpcNames(dbA).ns), false);
    assert.equal(await netnsExists(nodeNetNames(nodeA).ns), false);
    await lab.close();
    assert.equal(await removePublicBridgeIfUnused(PUBLIC), true);
    assert.deepEqual(await hostLinks(publicBridgeName(PUBLIC)), []);
    assert.deepEqual(await hostLinks(vpcNames(dbA).hostIf), []);
  });
});
