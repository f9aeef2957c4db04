// Pure rules of the isolation runtime: names, limit checks, unit conversions, CPU allocation.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "../../src/domain/errors.ts";
import { allocateCpus } from "../../src/runtime/cpu-allocator.ts";
import {
  assertSandboxName,
  formatCpuList,
  parseCpuList,
  quotaMicros,
  sandboxNameFor,
  validateLimits,
  weightToShares,
} from "../../src/runtime/limits.ts";
import type { SandboxLimits } from "../../src/runtime/types.ts";

describe("sandbox names", () => {
  it("derives the on-host name from the instance id", () => {
    assert.equal(sandboxNameFor("inst-0a1b2c"), "cellar-inst-0a1b2c");
  });

  for (const bad of ["", "../etc", "a/b", "..", ".hidden", "Upper", "a b", "x".repeat(64)]) {
    it(`refuses ${JSON.stringify(bad)}`, () => {
      assert.throws(() => assertSandboxName(bad), ValidationError);
    });
  }
});

describe("limit validation", () => {
  const cases: [string, SandboxLimits, string | null][] = [
    ["empty limits are fine", {}, null],
    ["a typical Starter", { memoryBytes: 512 * 2 ** 20, cpuQuota: 0.25, cpuWeight: 100, pidsMax: 200 }, null],
    ["memory below 4 MiB", { memoryBytes: 1024 }, "memoryBytes"],
    ["fractional memory", { memoryBytes: 5e6 + 0.5 }, "memoryBytes"],
    ["quota below 1 ms per period", { cpuQuota: 0.001 }, "cpuQuota"],
    ["negative quota", { cpuQuota: -1 }, "cpuQuota"],
    ["weight 0", { cpuWeight: 0 }, "cpuWeight"],
    ["empty cpu list", { cpus: [] }, "cpus"],
    ["repeated cpu", { cpus: [1, 1] }, "cpus"],
    ["pids 0", { pidsMax: 0 }, "pidsMax"],
    ["bad io device", { io: [{ device: "/dev/loop0", writeIops: 10 }] }, "io[0].device"],
    ["io value 0", { io: [{ device: "7:0", writeIops: 0 }] }, "io[0].writeIops"],
  ];
  for (const [title, limits, field] of cases) {
    it(title, () => {
      if (field === null) return validateLimits(limits);
      assert.throws(
        () => validateLimits(limits),
        (err: unknown) => err instanceof ValidationError && field in err.fields,
      );
    });
  }
});

describe("unit conversions", () => {
  it("turns a fraction of vCPUs into a CFS quota per 100 ms period", () => {
    assert.equal(quotaMicros(0.25), 25_000);
    assert.equal(quotaMicros(2), 200_000);
    assert.equal(quotaMicros(0.0101), 1_010);
  });

  it("maps the v2 weight scale onto v1 shares", () => {
    assert.equal(weightToShares(100), 1024);
    assert.equal(weightToShares(1), 10);
    assert.equal(weightToShares(10_000), 102_400);
  });

  it("reads and writes the kernel's CPU list format", () => {
    assert.deepEqual(parseCpuList("0-2,4\n"), [0, 1, 2, 4]);
    assert.deepEqual(parseCpuList(""), []);
    assert.equal(formatCpuList([4, 0, 2, 1]), "0-2,4");
    assert.equal(formatCpuList([3]), "3");
    assert.throws(() => parseCpuList("a-b"));
  });
});

describe("allocateCpus (exclusive CPUs on Dedicated hosts)", () => {
  const cases: [string, number, number[], number, number[] | RegExp][] = [
    ["first CPUs of an empty host", 4, [], 2, [0, 1]],
    ["skips CPUs already taken", 4, [0, 2], 2, [1, 3]],
    ["the whole host", 2, [], 2, [0, 1]],
    [
      "refuses to overcommit",
      4,
      [0, 1, 2],
      2,
      /needs 2 exclusive CPUs, only 1 of 4 free \(CPUs 0-2 already taken\)/,
    ],
    ["refuses on a full host", 2, [0, 1], 1, /needs 1 exclusive CPU, only 0 of 2 free/],
    ["refuses a fraction of a CPU", 4, [], 0.5, /whole CPUs/],
    ["refuses zero CPUs", 4, [], 0, /whole CPUs/],
    [
      "refuses reserved ids the host lacks",
      2,
      [5],
      1,
      /reserved CPUs 5 do not exist on a host with CPUs 0-1/,
    ],
    ["refuses a host without CPUs", 0, [], 1, /at least 1 CPU/],
  ];
  for (const [title, total, reserved, wanted, expected] of cases) {
    it(title, () => {
      const got = allocateCpus(total, reserved, wanted);
      if (Array.isArray(expected)) assert.deepEqual(got, { ok: true, cpus: expected });
      else {
        assert.equal(got.ok, false);
        if (!got.ok) assert.match(got.reason, expected);
      }
    });
  }

  it("never hands out a CPU twice when called repeatedly with what it gave", () => {
    const taken: number[] = [];
    for (let i = 0; i < 3; i++) {
      const got = allocateCpus(6, taken, 2);
      assert.ok(got.ok);
      if (got.ok) taken.push(...got.cpus);
    }
    assert.equal(new Set(taken).size, 6);
    assert.equal(allocateCpus(6, taken, 1).ok, false);
  });
});
