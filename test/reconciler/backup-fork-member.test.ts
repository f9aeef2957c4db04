// An HA fork's nodes: the first takes the source's data, the others only ever clone it. Pure.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { NodeBackupSpec } from "../../src/engines/postgresql/backup/types.ts";
import type { HaSpec } from "../../src/engines/postgresql/patroni-config.ts";
import { forkMember } from "../../src/reconciler/backup-spec.ts";

const backup = {
  stanza: "ad-1",
  repoPath: "/repo/osc-fr1/ad-1",
  cipherPass: "x".repeat(64),
  retentionDays: 7,
  fullEveryHours: 168,
  archiveTimeoutS: 60,
  checkEveryS: 60,
} satisfies NodeBackupSpec;
const seed = {
  id: "seed-ad-1",
  repoPath: "/repo/osc-fr1/ad-0",
  stanza: "ad-0",
  cipherPass: "y".repeat(64),
  targetTime: "2026-01-31T12:00:00.000Z",
  timeline: 2,
  rename: { fromUser: "a", fromDatabase: "a", toUser: "b", toDatabase: "b" },
};
const ha = { scope: "ad-1", member: "inst-a" } as HaSpec;

describe("forkMember", () => {
  it("keeps the seed on the first node only; the others join and never bootstrap", () => {
    const first = forkMember({ backup: { ...backup, seed }, ha }, 0);
    assert.deepEqual(first.backup?.seed, seed);
    assert.equal(first.ha.joinOnly, undefined);
    const second = forkMember({ backup: { ...backup, seed }, ha }, 1);
    assert.equal(second.backup?.seed, undefined);
    assert.equal(second.backup?.stanza, "ad-1");
    assert.equal(second.ha.joinOnly, true);
  });

  it("leaves a cluster that is not a fork as it is", () => {
    const spec = { backup, ha };
    assert.equal(forkMember(spec, 1), spec);
  });
});
