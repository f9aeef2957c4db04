// The timelines whose backups count: an HA cluster's failovers continue the history, a
// point-in-time restore starts it again. Pure.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  backupToVerify,
  chooseBackupSet,
  fullBackupDue,
  lineageOf,
  parseTimelineHistory,
  recoveryWindow,
  type BackupSet,
} from "../../src/engines/postgresql/backup/backup-info.ts";

const at = (min: number) => new Date(Date.UTC(2026, 0, 31, 12, min));
const set = (label: string, timeline: number, stopMin: number): BackupSet => ({
  label,
  type: "full",
  timeline,
  startedAt: at(stopMin - 1),
  stoppedAt: at(stopMin),
  size: 1,
  repoSize: 1,
  annotations: {},
});

describe("timeline history", () => {
  it("parses PostgreSQL's history lines, skipping comments and blanks", () => {
    const text =
      "1\t0/3000000\tno recovery target specified\n\n# note\n2\t0/5000A28\tbefore 2026-01-31 12:00:00+00\n";
    assert.deepEqual(parseTimelineHistory(text), [
      { parent: 1, switchLsn: "0/3000000", reason: "no recovery target specified" },
      { parent: 2, switchLsn: "0/5000A28", reason: "before 2026-01-31 12:00:00+00" },
    ]);
  });

  it("follows failovers back, and stops at a restore", () => {
    const failovers = parseTimelineHistory(
      "1\t0/3000000\tno recovery target specified\n2\t0/4000000\tno recovery target specified\n",
    );
    assert.deepEqual(lineageOf(3, failovers), [3, 2, 1]);
    const restoredThenFailover = parseTimelineHistory(
      "1\t0/3000000\tno recovery target specified\n" +
        "2\t0/5000000\tbefore 2026-01-31 12:00:00+00\n" +
        "3\t0/6000000\tno recovery target specified\n",
    );
    assert.deepEqual(lineageOf(4, restoredThenFailover), [4, 3]);
    assert.deepEqual(lineageOf(2, parseTimelineHistory("1\t0/3000000\tafter 2026-01-31 12:00:00+00\n")), [2]);
    assert.deepEqual(lineageOf(1, []), [1]);
  });
});

describe("backups of a lineage", () => {
  const backups = [set("a", 1, 10), set("b", 2, 20), set("c", 3, 30)];

  it("counts the ancestors' backups for the window, the choice and the schedule", () => {
    assert.deepEqual(recoveryWindow(backups, [3, 2], at(40)), { earliest: at(20), latest: at(40) });
    assert.deepEqual(recoveryWindow(backups, 3, at(40)), { earliest: at(30), latest: at(40) });
    assert.equal(chooseBackupSet(backups, [3, 2], at(25))?.label, "b");
    assert.equal(chooseBackupSet(backups, [3], at(25)), null);
    // A failover needs no new full backup: the one of the timeline before is recent.
    assert.equal(fullBackupDue([set("a", 1, 10)], [2, 1], at(20), 168), null);
    assert.equal(fullBackupDue([set("a", 1, 10)], [2], at(20), 168), "new-timeline");
  });

  it("verifies the newest pending backup of the lineage", () => {
    assert.equal(backupToVerify(backups, [2, 1])?.label, "b");
    assert.equal(backupToVerify(backups, [4]), null);
  });
});
