// Patroni's configuration of one node (pure): where it listens and is dialled, with one
// address (a host's) or two (inside a network namespace: its link to the host, then its
// database's network), how it finds the DCS, and what Enterprise adds.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  CELLAR_HA_TIMING,
  renderPatroniConfig,
  type HaSpec,
  type PatroniFiles,
} from "../../src/engines/postgresql/patroni-config.ts";
import { planPostgresSettings } from "../../src/engines/postgresql/plan-settings.ts";

const ha = (over: Partial<HaSpec> = {}): HaSpec => ({
  scope: "ad-1",
  namespace: "/cellar/",
  member: "inst-1",
  restPort: 30001,
  restPassword: "rest",
  dcs: { endpoints: ["https://100.108.0.1:2379"], user: "u", password: "p", certPem: "", keyPem: "" },
  replication: { password: "r", certPem: "", keyPem: "" },
  rewindPassword: "w",
  synchronous: false,
  timing: CELLAR_HA_TIMING,
  releaseLeaderOnLoss: true,
  ...over,
});

const files: PatroniFiles = {
  dataDir: "/d",
  binDir: "/b",
  pgpass: "/t/pgpass",
  serverCert: "/t/s.crt",
  serverKey: "/t/s.key",
  caFile: "/t/ca.crt",
  replicationCert: "/t/r.crt",
  replicationKey: "/t/r.key",
  dcsCert: "/t/d.crt",
  dcsKey: "/t/d.key",
};

function render(listenAddress: string, over: Partial<HaSpec> = {}) {
  const text = renderPatroniConfig(
    ha(over),
    {
      settings: planPostgresSettings({ ramMb: 4096, model: "dedicated" }),
      listenAddress,
      port: 20001,
      socketDir: "/s",
      logDir: "/l",
      tls: { certFile: files.serverCert, keyFile: files.serverKey, caFile: files.caFile },
      clusterName: "inst-1",
    },
    files,
    { forceTls: true },
  );
  return JSON.parse(text) as Record<string, any>;
}

describe("Patroni configuration", () => {
  it("on a host address: listens and is dialled there", () => {
    const c = render("127.44.0.1");
    assert.equal(c.postgresql.listen, "127.44.0.1:20001");
    assert.equal(c.postgresql.connect_address, "127.44.0.1:20001");
    assert.equal(c.restapi.listen, "127.44.0.1:30001");
    assert.equal(c.restapi.connect_address, "127.44.0.1:30001");
  });

  it("in a namespace: listens on both addresses, is dialled on its database's network", () => {
    const c = render("10.213.0.2,10.20.0.10");
    assert.equal(c.postgresql.listen, "10.20.0.10,10.213.0.2:20001");
    assert.equal(c.postgresql.connect_address, "10.20.0.10:20001");
    // The namespace is the node's own: all of its addresses, for the agent and the gateways.
    assert.equal(c.restapi.listen, "0.0.0.0:30001");
    assert.equal(c.restapi.connect_address, "10.20.0.10:30001");
  });

  it("uses the DCS endpoints it is given, never the members' advertised ones", () => {
    const c = render("127.44.0.1");
    assert.deepEqual(c.etcd3.hosts, ["100.108.0.1:2379"]);
    assert.equal(c.etcd3.use_proxies, true);
    assert.equal(c.etcd3.protocol, "https");
  });

  it("Enterprise: strict synchronous replication; Business: asynchronous", () => {
    const ent = render("127.44.0.1", { synchronous: true }).bootstrap.dcs;
    assert.equal(ent.synchronous_mode, true);
    assert.equal(ent.synchronous_mode_strict, true);
    const biz = render("127.44.0.1").bootstrap.dcs;
    assert.equal(biz.synchronous_mode, false);
    assert.equal(biz.synchronous_mode_strict, false);
  });

  it("never lets a member on an older timeline than the cluster's lead", () => {
    assert.equal(render("127.44.0.1").bootstrap.dcs.check_timeline, true);
  });

  it("lets the replication role in over TLS with a client certificate only", () => {
    const hba = render("127.44.0.1").postgresql.pg_hba as string[];
    assert.ok(
      hba.some((l) => /^hostssl\s+replication\s+cellar_replication .*clientcert=verify-full/.test(l)),
    );
    assert.ok(hba.some((l) => /^host\s+all\s+cellar_replication .*reject/.test(l)));
  });
});
