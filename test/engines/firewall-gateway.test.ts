// The gateway layer of the firewall, alone (no nftables in the way): a real HAProxy inside a
// namespace of the test's own, with clients in other namespaces. Allowed sources reach the
// backend, others are closed before a byte gets through; under Force TLS only connections
// that open with an SSLRequest pass; a public address can be added and taken away.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { ValidationError } from "../../src/domain/errors.ts";
import { renderAclLines } from "../../src/engines/postgresql/gateway-acl.ts";
import { Gateway } from "../../src/engines/postgresql/gateway.ts";
import { renderHaproxyConfig, type GatewaySpec } from "../../src/engines/postgresql/haproxy-config.ts";
import { inNetns, netnsExists, netnsId, netnsOfPid } from "../../src/runtime/netns.ts";
import { probeIsolation } from "../../src/runtime/probe.ts";
import {
  ensurePublicAddress,
  ensurePublicBridge,
  removePublicAddress,
  removePublicBridgeIfUnused,
} from "../../src/runtime/vpc.ts";
import { NetLab, PLAIN_STARTUP, SSL_REQUEST } from "../support/net-lab.ts";

const probe = await probeIsolation();
const PUBLIC = "198.19.202.0/24";

describe("gateway ACL rendering (pure)", () => {
  const base = {
    name: "inst-gw",
    adminSocket: "/x/admin.sock",
    listen: { host: "198.19.202.10", port: 5432 },
    backends: [{ name: "inst-n", host: "10.20.0.10", port: 20001 }],
    maxConnections: 100,
  };

  it("filters sources before anything else and checks the first bytes under Force TLS", () => {
    const cfg = renderHaproxyConfig({
      ...base,
      acl: { tlsOnly: true, allow: ["203.0.113.0/24", "198.19.202.1/32"] },
    });
    const lines = cfg.split("\n");
    const at = (l: string) => lines.indexOf(l);
    assert.ok(
      at("  acl cellar_allowed src 203.0.113.0/24 198.19.202.1/32") > at("  bind 198.19.202.10:5432"),
    );
    assert.ok(at("  tcp-request connection reject unless cellar_allowed") > 0);
    assert.ok(at("  tcp-request content reject unless { req.payload(0,8) -m bin 0000000804d2162f }") > 0);
  });

  it("names the allow list's file when the gateway keeps one (swapped at run time)", () => {
    assert.deepEqual(renderAclLines({ tlsOnly: false, allow: [], file: "/gw/allowed.lst" }), [
      "  acl cellar_allowed src -f /gw/allowed.lst",
      "  tcp-request connection reject unless cellar_allowed",
    ]);
    assert.throws(() => renderAclLines({ tlsOnly: false, allow: [], file: "/gw/a b" }), ValidationError);
  });

  it("rejects every connection when nothing is allowed, and renders nothing without an ACL", () => {
    assert.deepEqual(renderAclLines({ tlsOnly: false, allow: [] }), ["  tcp-request connection reject"]);
    assert.deepEqual(renderAclLines(undefined), []);
    assert.deepEqual(renderAclLines({ tlsOnly: false }), []);
  });

  it("spreads long allow lists over several lines of one ACL", () => {
    const allow = Array.from({ length: 40 }, (_, i) => `10.0.${i}.0/24`);
    const lines = renderAclLines({ tlsOnly: false, allow });
    assert.equal(lines.filter((l) => l.startsWith("  acl cellar_allowed src ")).length, 3);
  });

  it("refuses what is not a CIDR, and extra binds that are not addresses", () => {
    assert.throws(() => renderAclLines({ tlsOnly: false, allow: ["10.0.0.1/8"] }), ValidationError);
    assert.throws(() => renderAclLines({ tlsOnly: false, allow: ["any"] }), ValidationError);
    assert.throws(
      () => renderHaproxyConfig({ ...base, extraBinds: [{ host: "a b", port: 1 }] }),
      ValidationError,
    );
  });
});

/** A stand-in for PostgreSQL inside `ns`: answers "S" to anything and counts connections. */
function fakePostgres(
  ns: string,
  host: string,
  port: number,
): Promise<{ child: ChildProcess; seen: () => number }> {
  const js = `let n = 0; require("node:net").createServer((s) => { n++; console.log(n); s.on("data", () => s.write("S")); }).listen(${port}, "${host}", () => console.log(0))`;
  const [cmd, ...args] = inNetns(ns, [process.execPath, "-e", js]);
  const child = spawn(cmd!, args, { stdio: ["ignore", "pipe", "inherit"] });
  let seen = 0;
  return new Promise((resolve, reject) => {
    child.stdout.on("data", (d: Buffer) => {
      seen = Number(d.toString().trim().split("\n").at(-1));
      resolve({ child, seen: () => seen });
    });
    child.once("exit", (code) => reject(new Error(`fake server exited with ${code}`)));
  });
}

describe(
  "gateway firewall with a real HAProxy",
  { skip: probe.netns.ok ? false : probe.netns.detail },
  () => {
    const lab = new NetLab(PUBLIC);
    let dir = "";
    let gw: Gateway;
    let dbNs = "";
    let friend = "";
    let stranger = "";
    let backend: { child: ChildProcess; seen: () => number };
    const spec = (extra: Partial<GatewaySpec>): GatewaySpec => ({
      listen: { host: "198.19.202.10", port: 5432 },
      backends: [{ name: "inst-fake", host: "127.0.0.1", port: 25432 }],
      maxConnections: 50,
      netns: dbNs,
      ...extra,
    });

    before(async () => {
      dir = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-fw-gw-"));
      await fs.chmod(dir, 0o755);
      await ensurePublicBridge(PUBLIC);
      // The database's side: a namespace with one address on the public bridge.
      dbNs = await lab.client("db", "198.19.202.10");
      friend = await lab.client("friend", "198.19.202.50");
      stranger = await lab.client("stranger", "198.19.202.60");
      backend = await fakePostgres(dbNs, "127.0.0.1", 25432);
      gw = new Gateway({ id: "inst-fwgw", baseDir: path.join(dir, "gw") });
    });

    after(async () => {
      await gw?.destroy().catch(() => undefined);
      backend?.child.kill("SIGKILL");
      await lab.close();
      await removePublicAddress(PUBLIC, "198.19.202.2");
      await removePublicBridgeIfUnused(PUBLIC);
      await fs.rm(dir, { recursive: true, force: true });
    });

    it("runs inside the database's namespace as the haproxy user without root's groups", async () => {
      assert.equal(await gw.ensure(spec({ acl: { tlsOnly: true, allow: ["198.19.202.48/29"] } })), "started");
      const pid = (await gw.pid())!;
      assert.equal(await netnsOfPid(pid), await netnsId(dbNs));
      const status = await fs.readFile(`/proc/${pid}/status`, "utf8");
      assert.doesNotMatch(/^Uid:\s+(\d+)/m.exec(status)![1]!, /^0$/);
      assert.equal(/^Groups:[ \t]*(.*)$/m.exec(status)![1]!.trim(), "");
    });

    it("lets an allowed TLS client through and closes plaintext before it reaches the node", async () => {
      const before = backend.seen();
      assert.deepEqual(await lab.tcp(friend, "198.19.202.10", 5432, { send: SSL_REQUEST }), {
        outcome: "data",
        data: "53",
      });
      const plain = await lab.tcp(friend, "198.19.202.10", 5432, { send: PLAIN_STARTUP });
      assert.equal(plain.outcome, "closed");
      assert.equal(backend.seen(), before + 1, "only the TLS connection reached the backend");
    });

    it("closes a denied source, even one speaking TLS", async () => {
      const before = backend.seen();
      assert.equal((await lab.tcp(stranger, "198.19.202.10", 5432, { send: SSL_REQUEST })).outcome, "closed");
      assert.equal(backend.seen(), before);
    });

    it("takes a new allow list in the running process: no reload, no new process", async () => {
      const pid = await gw.pid();
      assert.equal(await gw.ensure(spec({ acl: { tlsOnly: true, allow: ["198.19.202.60/32"] } })), "updated");
      assert.equal(await gw.pid(), pid);
      assert.equal((await lab.tcp(stranger, "198.19.202.10", 5432, { send: SSL_REQUEST })).outcome, "data");
      assert.equal((await lab.tcp(friend, "198.19.202.10", 5432, { send: SSL_REQUEST })).outcome, "closed");
    });

    it("publishes on an extra address while asked, and stops when not (a Shared public address)", async () => {
      await ensurePublicAddress(PUBLIC, "198.19.202.2");
      // In the host namespace now: listens on a loopback address and on the host's public address.
      const shared = spec({
        listen: { host: "127.0.0.1", port: 25433 },
        backends: [{ name: "inst-fake", host: "198.19.202.10", port: 5432 }],
        extraBinds: [{ host: "198.19.202.2", port: 25433 }],
        acl: { tlsOnly: true },
      });
      delete shared.netns;
      assert.equal(await gw.ensure(shared), "started", "moving out of the namespace restarts it");
      assert.equal(await netnsOfPid((await gw.pid())!), await fs.readlink("/proc/self/ns/net"));
      const res = await lab.tcp(friend, "198.19.202.2", 25433, { send: PLAIN_STARTUP });
      assert.equal(res.outcome, "closed", "plaintext refused on the public address too");
      delete shared.extraBinds;
      assert.equal(await gw.ensure(shared), "reloaded");
      assert.equal((await lab.tcp(friend, "198.19.202.2", 25433, { send: SSL_REQUEST })).outcome, "refused");
      assert.equal(await netnsExists(dbNs), true);
    });
  },
);
