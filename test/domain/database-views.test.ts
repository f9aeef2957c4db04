import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  addonStatusOf,
  databaseApiStatusOf,
  validateAddonOptions,
  validateProjectId,
  variableNamesOf,
  type DatabasePhase,
} from "../../src/domain/database-views.ts";
import { ValidationError } from "../../src/domain/errors.ts";

function fieldsOf(fn: () => unknown): Record<string, string[]> {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ValidationError, `expected a ValidationError, got ${String(err)}`);
    return err.fields;
  }
  assert.fail("expected a ValidationError");
}

describe("database views", () => {
  it("reports an add-on running only when its phase is running", () => {
    const cases: Array<[DatabasePhase, string]> = [
      ["provisioning", "provisioning"],
      ["running", "running"],
      ["updating", "provisioning"],
      ["deleting", "provisioning"],
      ["deleted", "provisioning"],
      ["suspended", "suspended"],
      ["failed", "provisioning"],
    ];
    for (const [phase, status] of cases) assert.equal(addonStatusOf(phase), status, phase);
  });

  it("maps phases to the database API's statuses", () => {
    const cases: Array<[DatabasePhase, number, number, string]> = [
      ["provisioning", 1, 0, "creating"],
      ["provisioning", 3, 0, "creating"],
      ["running", 2, 2, "running"],
      ["running", 3, 2, "updating"],
      ["updating", 3, 2, "updating"],
      ["suspended", 1, 1, "stopped"],
      ["deleting", 2, 1, "deleting"],
      ["failed", 1, 0, "failed"],
    ];
    for (const [phase, gen, observed, status] of cases) {
      assert.equal(databaseApiStatusOf(phase, gen, observed), status, `${phase} ${gen}/${observed}`);
    }
  });

  it("names the variables an add-on gives its app", () => {
    assert.deepEqual(variableNamesOf("postgresql"), ["SCALINGO_POSTGRESQL_URL", "DATABASE_URL"]);
    assert.deepEqual(variableNamesOf("mysql"), ["SCALINGO_MYSQL_URL", "DATABASE_URL"]);
  });

  it("accepts plain project ids and refuses anything else", () => {
    for (const ok of ["proj-1", "a", "P_2024", "0".repeat(64)]) assert.equal(validateProjectId(ok), ok);
    const bad: unknown[] = ["", "-x", "a b", "x;rm -rf /", "a'--", "$(id)", "0".repeat(65), 5, null, {}];
    for (const v of bad) {
      assert.deepEqual(Object.keys(fieldsOf(() => validateProjectId(v))), ["project_id"], String(v));
    }
  });

  it("accepts no add-on option and names the one it cannot honour", () => {
    validateAddonOptions(undefined);
    validateAddonOptions(null);
    validateAddonOptions({});
    const cases: Array<[unknown, string, RegExp]> = [
      [{ version: "15" }, "options.version", /not supported yet/],
      [{ colour: "blue" }, "options.colour", /not a known option/],
      ["15", "options", /JSON object/],
      [["15"], "options", /JSON object/],
    ];
    for (const [input, field, message] of cases) {
      const fields = fieldsOf(() => validateAddonOptions(input));
      assert.match(fields[field]?.[0] ?? "", message, JSON.stringify(input));
    }
  });
});
