// The network part of instance specs, and the regions' private networks (pure): what a
// gateway is asked to listen on and enforce for each model, with and without hosts that make
// network namespaces (the no-root fallback: the gateway alone filters, on its host's address).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError, loadConfig } from "../../src/config.ts";
import { appRange, hostPrivateAddress, regionPrivateBlock } from "../../src/domain/private-network.ts";
import type { GatewaySpec } from "../../src/engines/postgresql/haproxy-config.ts";
import {
  certificateAddresses,
  nodeVpcAddress,
  withGatewayNetwork,
  type NetworkPolicy,
} from "../../src/reconciler/network-spec.ts";

const REGIONS = ["osc-fr1", "osc-secnum-fr1"];
const gateway: GatewaySpec = {
  listen: { host: "127.5.0.1", port: 30001 },
  backends: [{ name: "inst-node0", host: "127.5.0.2", port: 20001 }],
  maxConnections: 120,
};

function policy(over: Partial<NetworkPolicy>): NetworkPolicy {
  return {
    databaseId: "ad-0123456789abcdef0123",
    model: "shared",
    forceTls: false,
    publiclyAvailable: false,
    publicNetwork: "198.18.0.0/16",
    control: ["198.18.0.1/32"],
    allow: null,
    vpc: null,
    hostPublic: new Map(),
    hostPrivate: new Map(),
    ...over,
  };
}

describe("regions' private networks (pure)", () => {
  it("gives each region a block, its apps the upper half, loopback hosts an address in the lower", () => {
    assert.equal(regionPrivateBlock("172.30.0.0/16", REGIONS, "osc-fr1"), "172.30.0.0/17");
    assert.equal(regionPrivateBlock("172.30.0.0/16", REGIONS, "osc-secnum-fr1"), "172.30.128.0/17");
    assert.equal(regionPrivateBlock("172.30.0.0/16", REGIONS, "elsewhere"), null);
    assert.equal(appRange("172.30.76.0/25"), "172.30.76.64/26");
    assert.equal(hostPrivateAddress("172.30.76.0/25", "127.76.0.1"), "172.30.76.1");
    assert.equal(hostPrivateAddress("172.30.0.0/17", "127.20.1.2"), "172.30.1.2");
    // A host on a real network: its own address is its private one.
    assert.equal(hostPrivateAddress("172.30.0.0/17", "10.0.0.5"), null);
    // Past the hosts' half (it would fall among the apps) or on the network address: none.
    assert.equal(hostPrivateAddress("172.30.76.0/25", "127.76.0.70"), null);
    assert.equal(hostPrivateAddress("172.30.76.0/25", "127.76.0.0"), null);
  });

  it("is configured with CELLAR_PRIVATE_NETWORK, refused where it overlaps another network", () => {
    assert.equal(loadConfig({}).privateNetwork, "172.30.0.0/16");
    assert.equal(loadConfig({ CELLAR_PRIVATE_NETWORK: "10.99.0.0/16" }).privateNetwork, "10.99.0.0/16");
    assert.throws(
      () => loadConfig({ CELLAR_PRIVATE_NETWORK: "198.18.0.0/24" }),
      (err: Error) =>
        err instanceof ConfigError &&
        /overlaps 198\.18\.0\.0\/16 \(CELLAR_PUBLIC_NETWORK\)/.test(err.message),
    );
    assert.throws(
      () => loadConfig({ CELLAR_PRIVATE_NETWORK: "10.213.0.0/16" }),
      /overlaps 10\.213\.0\.0\/16/,
    );
    assert.throws(
      () => loadConfig({ CELLAR_PRIVATE_NETWORK: "nope" }),
      /CELLAR_PRIVATE_NETWORK=nope is invalid/,
    );
  });
});

describe("gateway network specs (pure)", () => {
  const priv = { block: "172.30.0.0/17", address: "172.30.0.1" };

  it("Shared: listens on the region's private network always, on the public side only when published", () => {
    const p = policy({ hostPrivate: new Map([["h1", priv]]), hostPublic: new Map([["h1", "198.18.0.2"]]) });
    const quiet = withGatewayNetwork(gateway, p, "h1", new Map());
    assert.deepEqual(quiet.extraBinds, [{ host: "172.30.0.1", port: 30001 }]);
    assert.equal(quiet.acl, undefined, "no source filtering, plaintext allowed");
    const published = withGatewayNetwork(
      gateway,
      { ...p, forceTls: true, publiclyAvailable: true },
      "h1",
      new Map(),
    );
    assert.deepEqual(published.extraBinds, [
      { host: "172.30.0.1", port: 30001 },
      { host: "198.18.0.2", port: 30001 },
    ]);
    assert.deepEqual(published.acl, { tlsOnly: true });
    assert.deepEqual((published as { network?: unknown }).network, {
      publicNetwork: "198.18.0.0/16",
      privateNetwork: priv,
      hostPublicAddress: "198.18.0.2",
    });
    assert.deepEqual(certificateAddresses(p), ["198.18.0.2", "172.30.0.1"]);
    // A host that makes no networks: its own address only.
    const bare = withGatewayNetwork(gateway, policy({}), "h1", new Map());
    assert.equal(bare.extraBinds, undefined);
    assert.equal((bare as { network?: unknown }).network, undefined);
  });

  it("Dedicated with its own network: listens on its public address, edge and gateway allow the same", () => {
    const p = policy({
      model: "dedicated",
      forceTls: true,
      allow: ["203.0.113.0/24"],
      vpc: { range: "10.240.0.0/25", publicAddress: "198.18.0.7", port: 5432 },
    });
    const spec = withGatewayNetwork(gateway, p, "h1", new Map([["inst-node0", 0]]));
    assert.deepEqual(spec.listen, { host: "198.18.0.7", port: 5432 });
    assert.deepEqual(spec.backends[0]!.host, nodeVpcAddress("10.240.0.0/25", 0));
    assert.deepEqual(spec.acl, { tlsOnly: true, allow: ["203.0.113.0/24", "198.18.0.1/32"] });
    const edge = (spec as { network?: { vpc?: { edge: unknown } } }).network?.vpc?.edge;
    assert.deepEqual(edge, { ports: [5432], allow: ["203.0.113.0/24"], control: ["198.18.0.1/32"] });
  });

  it("Dedicated without namespaces (not root): the gateway alone filters, on its host's address", () => {
    // loadNetworkPolicy's fallback: no network, and only the host's own processes as control.
    const p = policy({
      model: "dedicated",
      forceTls: true,
      allow: ["203.0.113.0/24"],
      control: ["127.0.0.0/8"],
    });
    const spec = withGatewayNetwork(gateway, p, "h1", new Map([["inst-node0", 0]]));
    assert.deepEqual(spec.listen, gateway.listen);
    assert.deepEqual(spec.backends, gateway.backends);
    assert.deepEqual(spec.acl, { tlsOnly: true, allow: ["203.0.113.0/24", "127.0.0.0/8"] });
    assert.equal((spec as { network?: unknown }).network, undefined);
    assert.deepEqual(withGatewayNetwork(gateway, { ...p, allow: [] }, "h1", new Map()).acl, {
      tlsOnly: true,
      allow: ["127.0.0.0/8"],
    });
  });
});
