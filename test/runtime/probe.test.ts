// What the probe concludes from a host's mounts and privileges (pure, table-driven), and what it
// finds on this machine for real.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  cgroupLayout,
  mountOf,
  parseMountinfo,
  parseSelfCgroup,
  type Mount,
} from "../../src/runtime/probe-facts.ts";
import {
  describeIsolation,
  interpretProbe,
  probeIsolation,
  type ProbeFacts,
} from "../../src/runtime/probe.ts";

const HYBRID_MOUNTS = `30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:29 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 30 0:30 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 30 0:34 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
26 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard`;
const HYBRID_SELF = `9:name=systemd:/
8:pids:/
7:blkio:/
4:memory:/process_api/abc
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/`;

// A pure v2 host, agent in a delegated systemd service; /var/lib on XFS with project quota.
const V2_MOUNTS = `25 1 8:1 / / rw - ext4 /dev/sda1 rw
26 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
27 25 8:2 / /var/lib rw - xfs /dev/sda2 rw,prjquota`;
const V2_SELF = "0::/system.slice/cellar-agent.service";

// v1 with cpu and cpuacct co-mounted, seen from a cgroup namespace (mount root is not "/").
const V1_NS_MOUNTS = `40 30 0:40 /docker/x /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
41 30 0:41 /docker/x /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory`;
const V1_NS_SELF = `3:cpu,cpuacct:/docker/x/sub
4:memory:/docker/x`;

function facts(over: Partial<ProbeFacts> & { mounts: string; self: string }): ProbeFacts {
  const mounts = parseMountinfo(over.mounts);
  const layout = cgroupLayout(mounts, parseSelfCgroup(over.self));
  const dirs = [...Object.values(layout.v1), ...(layout.v2 ? [layout.v2.ownDir] : [])];
  return {
    uid: 0,
    layout,
    writableDirs: new Set(dirs),
    v2Controllers: [],
    v2CgroupKill: true,
    commands: new Set([
      "ip",
      "unshare",
      "losetup",
      "mkfs.ext4",
      "blkid",
      "dumpe2fs",
      "e2fsck",
      "resize2fs",
      "mount",
      "umount",
    ]),
    loopControl: true,
    losetupFree: true,
    netnsWorks: true,
    volumesMount: mountOf(mounts, "/var/lib/cellar"),
    ...over,
  };
}

describe("cgroup layout parsing", () => {
  it("finds each v1 controller's own directory and the unified mount on a hybrid host", () => {
    const layout = cgroupLayout(parseMountinfo(HYBRID_MOUNTS), parseSelfCgroup(HYBRID_SELF));
    assert.equal(layout.v1.memory, "/sys/fs/cgroup/memory/process_api/abc");
    assert.equal(layout.v1.cpu, "/sys/fs/cgroup/cpu");
    assert.equal(layout.v1.blkio, "/sys/fs/cgroup/blkio");
    assert.deepEqual(layout.v2, { mount: "/sys/fs/cgroup/unified", ownDir: "/sys/fs/cgroup/unified" });
    assert.equal(layout.v2IsPrimary, false);
  });

  it("strips the mount root inside a cgroup namespace and shares co-mounted hierarchies", () => {
    const layout = cgroupLayout(parseMountinfo(V1_NS_MOUNTS), parseSelfCgroup(V1_NS_SELF));
    assert.equal(layout.v1.cpu, "/sys/fs/cgroup/cpu,cpuacct/sub");
    assert.equal(layout.v1.cpuacct, "/sys/fs/cgroup/cpu,cpuacct/sub");
    assert.equal(layout.v1.memory, "/sys/fs/cgroup/memory");
    assert.equal(layout.v2, null);
  });

  it("picks the longest mount holding a path", () => {
    const mounts: Mount[] = parseMountinfo(V2_MOUNTS);
    assert.equal(mountOf(mounts, "/var/lib/cellar")?.fsType, "xfs");
    assert.equal(mountOf(mounts, "/var/libx")?.mountPoint, "/");
  });
});

describe("interpretProbe", () => {
  it("hybrid host as root: v1 back-end, every limit, loop volumes", () => {
    const p = interpretProbe(facts({ mounts: HYBRID_MOUNTS, self: HYBRID_SELF, v2Controllers: ["hugetlb"] }));
    assert.equal(p.cgroupMode, "hybrid");
    assert.equal(p.backend, "cgroup-v1");
    for (const prim of ["cpu", "cpuset", "memory", "io", "pids"] as const) assert.ok(p.limits[prim].ok, prim);
    assert.ok(p.loopVolumes.ok && p.volumeQuota.ok && p.netns.ok);
  });

  it("pure v2 host with delegated controllers: v2 back-end", () => {
    const p = interpretProbe(
      facts({ mounts: V2_MOUNTS, self: V2_SELF, v2Controllers: ["cpuset", "cpu", "io", "memory", "pids"] }),
    );
    assert.equal(p.cgroupMode, "v2");
    assert.equal(p.backend, "cgroup-v2");
    assert.match(
      p.limits.memory.detail,
      /cgroup v2 memory under \/sys\/fs\/cgroup\/system.slice\/cellar-agent.service/,
    );
  });

  it("v2 host whose memory controller is not delegated says which one is missing", () => {
    const p = interpretProbe(facts({ mounts: V2_MOUNTS, self: V2_SELF, v2Controllers: ["cpu", "pids"] }));
    assert.equal(p.backend, "cgroup-v2");
    assert.equal(p.limits.memory.ok, false);
    assert.match(p.limits.memory.detail, /memory controller not enabled/);
  });

  it("not root: no cgroups, no netns, no loop volumes, each with its reason", () => {
    const p = interpretProbe(
      facts({
        mounts: HYBRID_MOUNTS,
        self: HYBRID_SELF,
        uid: 1000,
        writableDirs: new Set(),
        losetupFree: false,
      }),
    );
    assert.equal(p.backend, "none");
    assert.match(p.limits.memory.detail, /not root and \S+ not writable: cannot create cgroups/);
    assert.match(p.netns.detail, /not root/);
    // Said at the agent's start and in the host's status: the fallback, not just the lack.
    const netLine = describeIsolation(p).find((l) => l.startsWith("network namespaces: NO"));
    assert.match(netLine ?? "", /gateways listen on the host's address and enforce the firewall rules alone/);
    assert.match(p.loopVolumes.detail, /not root/);
    assert.match(p.volumeQuota.detail, /^volume quota not enforced: plain directory/);
  });

  it("no cgroup mounts at all", () => {
    const p = interpretProbe(facts({ mounts: "26 1 254:0 / / rw - ext4 /dev/vda rw", self: "" }));
    assert.equal(p.cgroupMode, "none");
    assert.equal(p.backend, "none");
    assert.match(p.limits.memory.detail, /memory controller not mounted \(cgroup v1\); no cgroup2 mount/);
  });

  it("project quota present but loop devices missing: says quota is not driven", () => {
    const p = interpretProbe(facts({ mounts: V2_MOUNTS, self: V2_SELF, loopControl: false }));
    assert.equal(p.loopVolumes.ok, false);
    assert.match(p.volumeQuota.detail, /has project quota, which Cellar does not drive yet/);
  });

  it("describeIsolation gives one line per primitive, with NO and the reason when unavailable", () => {
    const p = interpretProbe(facts({ mounts: V2_MOUNTS, self: V2_SELF, v2Controllers: ["cpu"] }));
    const lines = describeIsolation(p);
    assert.equal(lines.length, 10);
    assert.ok(lines.includes("privileges: root"));
    assert.ok(lines.some((l) => /^memory limit: NO \(memory controller not enabled/.test(l)));
    assert.ok(lines.some((l) => /^cpu quota\/weight: yes/.test(l)));
  });
});

describe("probeIsolation on this machine", () => {
  it("reports what the host offers, one line per primitive", async () => {
    const p = await probeIsolation();
    const lines = describeIsolation(p);
    assert.equal(lines.length, 10);
    for (const line of lines) assert.match(line, /^[a-z /]+: /);
    // Build machines are hybrid v1 hosts run as root (shared/environment.md); elsewhere only the shape is checked.
    if (p.root && p.cgroupMode === "hybrid") {
      assert.equal(p.backend, "cgroup-v1");
      assert.ok(p.limits.memory.ok, p.limits.memory.detail);
    }
  });
});
