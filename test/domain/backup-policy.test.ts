import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  archiveHealth,
  checkRestoreTime,
  parseRestoreTime,
  recoveryWindowDays,
} from "../../src/domain/backup-policy.ts";
import { ValidationError } from "../../src/domain/errors.ts";

const at = (iso: string) => new Date(iso);
const fieldMessage = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ValidationError);
    return err.fields.restore_time![0]!;
  }
  assert.fail("expected a ValidationError on restore_time");
};

describe("backup policy", () => {
  it("promises the reference's recovery window per model and class", () => {
    const cases: Array<[Parameters<typeof recoveryWindowDays>, number]> = [
      [["shared", "starter"], 7],
      [["shared", "business"], 7],
      [["dedicated", "starter"], 7],
      [["dedicated", "business"], 14],
      [["dedicated", "enterprise"], 30],
    ];
    for (const [args, days] of cases) assert.equal(recoveryWindowDays(...args), days, args.join(" "));
  });

  it("reads RFC 3339 times with a zone, and says what it expects otherwise", () => {
    assert.equal(parseRestoreTime("2026-01-31T12:00:00Z").toISOString(), "2026-01-31T12:00:00.000Z");
    assert.equal(parseRestoreTime("2026-01-31T13:00:00.250+01:00").toISOString(), "2026-01-31T12:00:00.250Z");
    for (const bad of [
      "2026-01-31T12:00:00",
      "2026-01-31",
      "yesterday",
      "2026-02-30T25:00:00Z",
      "1738324800",
    ]) {
      assert.match(
        fieldMessage(() => parseRestoreTime(bad)),
        /RFC 3339/,
        bad,
      );
    }
    for (const missing of [undefined, null, "", 5, {}]) {
      assert.match(
        fieldMessage(() => parseRestoreTime(missing)),
        /is required/,
      );
    }
  });

  it("accepts a past time inside the window, the bounds included", () => {
    const window = { earliest: at("2026-01-01T00:00:00Z"), latest: at("2026-01-02T00:00:00Z") };
    const now = at("2026-01-02T00:00:10Z");
    for (const t of ["2026-01-01T00:00:00Z", "2026-01-01T12:00:00Z", "2026-01-02T00:00:00Z"]) {
      checkRestoreTime(at(t), window, now);
    }
    assert.match(
      fieldMessage(() => checkRestoreTime(at("2026-01-02T00:00:05Z"), window, now)),
      /outside/,
    );
    assert.match(
      fieldMessage(() => checkRestoreTime(at("2025-12-31T23:59:59Z"), window, now)),
      /outside/,
    );
    assert.match(
      fieldMessage(() => checkRestoreTime(at("2026-01-03T00:00:00Z"), window, now)),
      /future/,
    );
    const none = { earliest: null, latest: null };
    assert.match(
      fieldMessage(() => checkRestoreTime(at("2026-01-01T00:00:00Z"), none, now)),
      /not finished/,
    );
  });

  it("calls the archive delayed past 12 hours and stale past 24", () => {
    const now = at("2026-01-02T00:00:00Z");
    assert.equal(archiveHealth(at("2026-01-01T13:00:00Z"), now), "healthy");
    assert.equal(archiveHealth(at("2026-01-01T11:00:00Z"), now), "delayed");
    assert.equal(archiveHealth(at("2025-12-31T23:00:00Z"), now), "stale");
  });
});
