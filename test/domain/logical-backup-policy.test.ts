// Logical backups' pure rules: retention (GFS per class, manual cap), the daily schedule's
// due slots, hour parsing, names, and who gets logical backups at all.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "../../src/domain/errors.ts";
import {
  assertLogicalBackupsOffered,
  backupName,
  dueSlots,
  logicalRetention,
  manualToEvict,
  parseScheduleHours,
  periodicToEvict,
  type Dated,
} from "../../src/domain/logical-backup-policy.ts";

const DAY = 86_400_000;
const at = (iso: string) => new Date(iso);

/** One periodic backup at 00:00 UTC every day from `first` to `last`, id = its date. */
function daily(first: string, last: string, skip: string[] = []): Dated[] {
  const out: Dated[] = [];
  for (let t = Date.parse(`${first}T00:00:00Z`); t <= Date.parse(`${last}T00:00:00Z`); t += DAY) {
    const id = new Date(t).toISOString().slice(0, 10);
    if (!skip.includes(id)) out.push({ id, at: new Date(t) });
  }
  return out;
}

function kept(backups: Dated[], evicted: string[]): string[] {
  return backups
    .map((b) => b.id)
    .filter((id) => !evicted.includes(id))
    .sort();
}

const fieldOf = (fn: () => unknown): [string, string] => {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ValidationError);
    const [field, messages] = Object.entries(err.fields)[0]!;
    return [field, messages[0]!];
  }
  assert.fail("expected a ValidationError");
};

describe("logical backup retention", () => {
  const now = at("2026-03-04T12:00:00Z"); // a Wednesday

  it("Starter keeps the last 7 daily and the last 4 Sundays' backups", () => {
    const backups = daily("2026-01-01", "2026-03-04");
    const evicted = periodicToEvict(backups, logicalRetention("starter"), now);
    assert.deepEqual(kept(backups, evicted), [
      "2026-02-08",
      "2026-02-15",
      "2026-02-22",
      "2026-02-26",
      "2026-02-27",
      "2026-02-28",
      "2026-03-01",
      "2026-03-02",
      "2026-03-03",
      "2026-03-04",
    ]);
  });

  it("Business keeps 7 daily, 8 weekly (Sundays) and 12 monthly (first Sundays)", () => {
    const backups = daily("2025-01-01", "2026-03-04");
    const evicted = periodicToEvict(backups, logicalRetention("business"), now);
    const dailies = [
      "2026-02-26",
      "2026-02-27",
      "2026-02-28",
      "2026-03-01",
      "2026-03-02",
      "2026-03-03",
      "2026-03-04",
    ];
    const sundays = [
      "2026-01-11",
      "2026-01-18",
      "2026-01-25",
      "2026-02-01",
      "2026-02-08",
      "2026-02-15",
      "2026-02-22",
    ];
    const firstSundays = ["2025-04-06", "2025-05-04", "2025-06-01", "2025-07-06", "2025-08-03", "2025-09-07"];
    const more = ["2025-10-05", "2025-11-02", "2025-12-07", "2026-01-04"];
    assert.deepEqual(kept(backups, evicted), [...dailies, ...sundays, ...firstSundays, ...more].sort());
  });

  it("takes a week's last backup once the week is over when its Sunday's failed", () => {
    const backups = daily("2026-01-01", "2026-03-04", ["2026-02-22"]);
    const evicted = periodicToEvict(backups, logicalRetention("starter"), now);
    const k = kept(backups, evicted);
    assert.ok(k.includes("2026-02-21"), "the Saturday stands in for the missing Sunday");
    assert.ok(k.includes("2026-02-08") && !k.includes("2026-02-01"), "still 4 weeks back");
  });

  it("keeps everything while there are fewer backups than the policy holds", () => {
    const backups = daily("2026-03-01", "2026-03-04");
    assert.deepEqual(periodicToEvict(backups, logicalRetention("starter"), now), []);
    assert.deepEqual(periodicToEvict([], logicalRetention("business"), now), []);
  });

  it("evicts the oldest manual backups over the cap: 10 on Starter, 50 on Business", () => {
    assert.equal(logicalRetention("starter").manualCap, 10);
    assert.equal(logicalRetention("business").manualCap, 50);
    const manual = daily("2026-02-01", "2026-02-12"); // 12 backups
    assert.deepEqual(manualToEvict(manual, 10).sort(), ["2026-02-01", "2026-02-02"]);
    assert.deepEqual(manualToEvict(manual, 50), []);
  });
});

describe("logical backup schedule", () => {
  const since = at("2026-01-01T00:00:00Z");
  const iso = (ds: Date[]) => ds.map((d) => d.toISOString());

  it("makes each passed hour of the last day due, once set", () => {
    assert.deepEqual(iso(dueSlots([0], at("2026-03-04T00:10:00Z"), since)), ["2026-03-04T00:00:00.000Z"]);
    // A controller down at the hour takes that backup later, up to an hour before the next.
    assert.deepEqual(iso(dueSlots([0], at("2026-03-04T22:30:00Z"), since)), ["2026-03-04T00:00:00.000Z"]);
    assert.deepEqual(iso(dueSlots([0], at("2026-03-04T23:30:00Z"), since)), []);
    assert.deepEqual(iso(dueSlots([23], at("2026-03-04T00:30:00Z"), since)), ["2026-03-03T23:00:00.000Z"]);
    assert.deepEqual(iso(dueSlots([1, 13], at("2026-03-04T14:00:00Z"), since)), [
      "2026-03-04T01:00:00.000Z",
      "2026-03-04T13:00:00.000Z",
    ]);
  });

  it("never backs up an hour that passed before the schedule was set", () => {
    assert.deepEqual(dueSlots([0], at("2026-03-04T15:00:00Z"), at("2026-03-04T14:00:00Z")), []);
    assert.deepEqual(dueSlots([0], at("2026-03-05T00:01:00Z"), at("2026-03-04T14:00:00Z")).length, 1);
  });

  it("reads an hour or a list of hours (0-23 UTC), and says what is allowed otherwise", () => {
    assert.deepEqual(parseScheduleHours(4), [4]);
    assert.deepEqual(parseScheduleHours([5, 3, 3]), [3, 5]);
    assert.deepEqual(parseScheduleHours(0), [0]);
    for (const bad of [24, -1, 1.5, "4", [], null, [2, 25], { h: 1 }]) {
      const [field, message] = fieldOf(() => parseScheduleHours(bad));
      assert.equal(field, "periodic_backups_scheduled_at", JSON.stringify(bad));
      assert.match(message, /from 0 to 23/);
    }
  });

  it("names backups as the reference does", () => {
    assert.equal(backupName(at("2023-12-07T00:06:08Z"), "my_app_4553"), "20231207000608_my_app_4553");
  });

  it("offers logical backups to Shared PostgreSQL databases only", () => {
    assertLogicalBackupsOffered("shared", "postgresql");
    const [field, message] = fieldOf(() => assertLogicalBackupsOffered("dedicated", "postgresql"));
    assert.equal(field, "database");
    assert.match(message, /continuous backups/);
    assert.equal(fieldOf(() => assertLogicalBackupsOffered("shared", "redis"))[0], "database");
  });
});
