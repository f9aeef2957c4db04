// Network exposure rules, pure: features of both models, firewall rule input, the public
// network's layout and managed ranges, IPv4 blocks.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "../../src/domain/errors.ts";
import {
  addressAt,
  cidrsOverlap,
  formatCidr,
  parseCidr,
  parseIpv4,
  subdivide,
} from "../../src/domain/ipv4.ts";
import {
  checkDisable,
  checkIpRangeFree,
  checkEnable,
  checkPublicNetwork,
  featureName,
  serviceAddressOf,
  featureStatus,
  managedRanges,
  parseFirewallRule,
  publicLayout,
  type FeatureName,
} from "../../src/domain/network-rules.ts";

const messageOf = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ValidationError, String(err));
    return Object.values(err.fields).flat().join(" ");
  }
  assert.fail("expected a ValidationError");
};

describe("IPv4 blocks", () => {
  it("parses addresses strictly", () => {
    assert.equal(parseIpv4("203.0.113.10"), 0xcb00710a);
    for (const bad of ["203.0.113", "256.0.0.1", "010.0.0.1", "1.2.3.4.5", " 1.2.3.4"]) {
      assert.equal(parseIpv4(bad), null, bad);
    }
  });

  it("refuses host bits and says which network was meant", () => {
    const r = parseCidr("203.0.113.10/24");
    assert.equal(r.ok, false);
    assert.match(!r.ok ? r.reason : "", /give the network address, 203\.0\.113\.0\/24/);
    assert.equal(parseCidr("0.0.0.0/0").ok, true);
    assert.equal(parseCidr("10.0.0.0/33").ok, false);
  });

  it("cuts and compares blocks", () => {
    const c = (t: string) => (parseCidr(t) as { ok: true; cidr: any }).cidr;
    assert.equal(formatCidr(subdivide(c("198.18.0.0/16"), 4, 3)), "198.18.192.0/18");
    assert.equal(addressAt(c("10.240.0.128/25"), 10), "10.240.0.138");
    assert.equal(cidrsOverlap(c("10.213.0.0/16"), c("10.0.0.0/8")), true);
    assert.equal(cidrsOverlap(c("10.240.0.0/25"), c("10.240.0.128/25")), false);
  });
});

describe("features", () => {
  const on = (...names: FeatureName[]) => new Set<FeatureName>(names);

  it("knows force-ssl and publicly-available only", () => {
    assert.equal(featureName("force-ssl"), "force-ssl");
    assert.match(
      messageOf(() => featureName("redis-aof")),
      /not a feature.*force-ssl or publicly-available/,
    );
    assert.match(
      messageOf(() => featureName(undefined)),
      /is required/,
    );
  });

  it("needs force-ssl before publicly-available, and the reverse to remove", () => {
    assert.match(
      messageOf(() => checkEnable("shared", "publicly-available", on())),
      /requires force-ssl/,
    );
    checkEnable("shared", "publicly-available", on("force-ssl"));
    assert.match(
      messageOf(() => checkDisable("shared", "force-ssl", on("force-ssl", "publicly-available"))),
      /remove publicly-available first/,
    );
    checkDisable("shared", "publicly-available", on("force-ssl", "publicly-available"));
  });

  it("keeps Dedicated databases on TLS and off publicly-available", () => {
    assert.match(
      messageOf(() => checkDisable("dedicated", "force-ssl", on())),
      /always require TLS/,
    );
    assert.match(
      messageOf(() => checkEnable("dedicated", "publicly-available", on())),
      /firewall rules/,
    );
  });

  it("tells statuses from what the instances report", () => {
    assert.equal(featureStatus("active", { applied: false, failed: false }), "PENDING_TO_ACTIVATE");
    assert.equal(featureStatus("active", { applied: true, failed: false }), "ACTIVATED");
    assert.equal(featureStatus("active", { applied: false, failed: true }), "FAILED");
    assert.equal(featureStatus("removing", { applied: false, failed: false }), "PENDING_TO_REMOVE");
    assert.equal(featureStatus("removing", { applied: true, failed: false }), null);
  });
});

describe("firewall rule input", () => {
  const ranges = managedRanges("198.18.0.0/16", ["osc-fr1", "osc-secnum-fr1"]);

  it("reads custom and managed ranges", () => {
    assert.deepEqual(
      parseFirewallRule({ type: "custom_range", cidr: " 203.0.113.10/32 ", label: "office" }, ranges),
      {
        type: "custom_range",
        cidr: "203.0.113.10/32",
        label: "office",
      },
    );
    assert.deepEqual(parseFirewallRule({ type: "managed_range", range_id: "mr-osc-fr1-egress" }, ranges), {
      type: "managed_range",
      rangeId: "mr-osc-fr1-egress",
    });
  });

  it("says what is wrong, field by field", () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{}, /custom_range or managed_range/],
      [{ type: "custom_range" }, /is required: an IPv4 CIDR/],
      [{ type: "custom_range", cidr: "10.0.0.1/8" }, /host bits set/],
      [{ type: "custom_range", cidr: "2001:db8::/32" }, /not an IPv4 CIDR/],
      [{ type: "custom_range", cidr: "10.0.0.0/8", range_id: "x" }, /only for managed_range/],
      [{ type: "custom_range", cidr: "10.0.0.0/8", label: "x".repeat(101) }, /at most 100/],
      [{ type: "managed_range" }, /GET \/api\/firewall\/managed_ranges/],
      [{ type: "managed_range", range_id: "mr-nowhere" }, /is not a managed range/],
      [
        { type: "managed_range", range_id: "mr-osc-fr1-egress", label: "apps" },
        /not allowed on a managed_range/,
      ],
      [{ type: "managed_range", range_id: "mr-osc-fr1-egress", cidr: "10.0.0.0/8" }, /only for custom_range/],
    ];
    for (const [body, want] of cases)
      assert.match(
        messageOf(() => parseFirewallRule(body, ranges)),
        want,
      );
  });
});

describe("the public network", () => {
  it("keeps the first address for the control plane and the last quarter for app egress", () => {
    const l = publicLayout("198.19.81.0/24", ["osc-fr1", "osc-secnum-fr1"]);
    assert.equal(l.control, "198.19.81.1");
    assert.deepEqual(
      [...l.egress],
      [
        ["osc-fr1", "198.19.81.192/27"],
        ["osc-secnum-fr1", "198.19.81.224/27"],
      ],
    );
    assert.deepEqual([l.firstOffset, l.lastOffset], [2, 191]);
    assert.deepEqual(
      managedRanges("198.19.81.0/24", ["osc-fr1"]).map((r) => [r.id, r.name, r.cidrs]),
      [["mr-osc-fr1-egress", "Cellar osc-fr1 region", ["198.19.81.192/26"]]],
    );
  });

  it("keeps a database's own range clear of the nodes' links and of the public side", () => {
    checkIpRangeFree("10.240.0.0/25", "198.18.0.0/16");
    assert.match(
      messageOf(() => checkIpRangeFree("10.213.8.0/24", "198.18.0.0/16")),
      /links to its nodes/,
    );
    assert.match(
      messageOf(() => checkIpRangeFree("10.0.0.0/8", "198.18.0.0/16")),
      /overlaps 10\.213\.0\.0\/16/,
    );
    assert.match(
      messageOf(() => checkIpRangeFree("198.18.4.0/24", "198.18.0.0/16")),
      /public side/,
    );
  });

  it("keeps it clear of the host services the nodes reach, mapped from loopback hosts", () => {
    assert.match(
      messageOf(() => checkIpRangeFree("100.100.0.0/16", "198.18.0.0/16")),
      /host services/,
    );
    assert.equal(serviceAddressOf("127.44.0.3"), "100.108.0.3");
    assert.equal(serviceAddressOf("127.20.1.2"), "100.84.1.2");
    // A real host address is reached as it is.
    assert.equal(serviceAddressOf("192.0.2.10"), "192.0.2.10");
  });

  it("must be a /8 to a /24", () => {
    assert.equal(checkPublicNetwork("198.18.0.0/16"), null);
    assert.match(checkPublicNetwork("198.18.0.0/25") ?? "", /between a \/8 and a \/24/);
    assert.match(checkPublicNetwork("198.18.0.1/16") ?? "", /host bits/);
  });
});
