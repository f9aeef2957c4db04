import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  assertNotProtected,
  databaseUserJson,
  GENERATED_PASSWORD_LENGTH,
  isReservedUsername,
  passwordOfRequest,
  validatePassword,
  validateUsername,
} from "../../src/domain/database-users.ts";
import { ValidationError } from "../../src/domain/errors.ts";

/** "ok", or "422 <field>" for a ValidationError. */
function outcome(fn: () => unknown): string {
  try {
    fn();
    return "ok";
  } catch (err) {
    if (err instanceof ValidationError) return `422 ${Object.keys(err.fields).join(",")}`;
    throw err;
  }
}

describe("database user names (6-32, letters, digits, _, starting with a letter)", () => {
  const cases: Array<[unknown, string]> = [
    ["reader", "ok"],
    ["Report_Writer_2", "ok"],
    ["a".repeat(32), "ok"],
    ["a".repeat(33), "422 name"],
    ["abcde", "422 name"],
    ["1reader", "422 name"],
    ["_reader", "422 name"],
    ["read-er1", "422 name"],
    ["reader 1", "422 name"],
    ["rëader1", "422 name"],
    ["", "422 name"],
    [undefined, "422 name"],
    [42, "422 name"],
    ["postgres", "422 name"],
    ["pg_monitor", "422 name"],
    ["cellar_read_only", "422 name"],
    ["CELLAR_stuff", "422 name"],
  ];
  for (const [name, expected] of cases) {
    it(`${JSON.stringify(name)} -> ${expected}`, () => {
      assert.equal(
        outcome(() => validateUsername(name)),
        expected,
      );
    });
  }

  it("says what is allowed", () => {
    assert.throws(
      () => validateUsername("abc"),
      (err: ValidationError) => /6 to 32 characters/.test(err.fields.name![0]!),
    );
    assert.throws(
      () => validateUsername("cellar_admin"),
      (err: ValidationError) => /reserved/.test(err.fields.name![0]!),
    );
  });

  it("reserves the platform's names whatever their case", () => {
    assert.equal(isReservedUsername("Postgres"), true);
    assert.equal(isReservedUsername("PG_read_all_data"), true);
    assert.equal(isReservedUsername("cellarman"), false);
  });
});

describe("database user passwords (24-64 characters, no quotes)", () => {
  const cases: Array<[string, string]> = [
    ["x".repeat(24), "ok"],
    ["x".repeat(64), "ok"],
    ["x".repeat(23), "422 password"],
    ["x".repeat(65), "422 password"],
    ["correct horse battery staple!", "ok"],
    ["é".repeat(24), "ok"],
    ["x".repeat(30) + '"', "422 password"],
    ["x".repeat(30) + "'", "422 password"],
    ["x".repeat(30) + "\n", "422 password"],
    ["x".repeat(30) + "\u0000", "422 password"],
  ];
  for (const [password, expected] of cases) {
    it(`${JSON.stringify(password.slice(-3))} (${password.length} chars) -> ${expected}`, () => {
      assert.equal(
        outcome(() => validatePassword(password)),
        expected,
      );
    });
  }
});

describe("the password of a request", () => {
  it("generates a 64-character [A-Za-z0-9_] password when none is given, and says so", () => {
    for (const given of [undefined, null, ""]) {
      const { password, generated } = passwordOfRequest(given, undefined);
      assert.equal(generated, true);
      assert.equal(password.length, GENERATED_PASSWORD_LENGTH);
      assert.match(password, /^[A-Za-z0-9_]{64}$/);
    }
    assert.notEqual(passwordOfRequest("", "").password, passwordOfRequest("", "").password);
  });

  it("keeps a chosen password, which is never echoed back", () => {
    const p = "a-chosen-password-of-30-chars!";
    assert.deepEqual(passwordOfRequest(p, p), { password: p, generated: false });
    assert.deepEqual(passwordOfRequest(p, undefined), { password: p, generated: false });
  });

  it("refuses a confirmation that differs, or one without a password", () => {
    const p = "a-chosen-password-of-30-chars!";
    assert.equal(
      outcome(() => passwordOfRequest(p, p + "x")),
      "422 password_confirmation",
    );
    assert.equal(
      outcome(() => passwordOfRequest("", p)),
      "422 password",
    );
    assert.equal(
      outcome(() => passwordOfRequest(123, undefined)),
      "422 password",
    );
    assert.equal(
      outcome(() => passwordOfRequest("short", "short")),
      "422 password",
    );
  });
});

describe("the protected user", () => {
  it("cannot be changed or deleted, and the error says why", () => {
    assert.equal(
      outcome(() => assertNotProtected("shop_prod_1234", "shop_prod_1234")),
      "422 name",
    );
    assert.throws(
      () => assertNotProtected("shop_prod_1234", "shop_prod_1234"),
      (err: ValidationError) => /protected user of this database/.test(err.fields.name![0]!),
    );
    assert.equal(
      outcome(() => assertNotProtected("reporting", "shop_prod_1234")),
      "ok",
    );
  });
});

describe("a database user as JSON (reference §4.3)", () => {
  it("has the reference's fields, and a password only when given one to return", () => {
    const user = { name: "reporting", readOnly: true, protected: false, passwordEncryption: "SCRAM-SHA-256" };
    assert.deepEqual(databaseUserJson(user), {
      name: "reporting",
      read_only: true,
      protected: false,
      dbms_attributes: { password_encryption: "SCRAM-SHA-256" },
    });
    assert.equal(databaseUserJson(user, "p".repeat(64)).password, "p".repeat(64));
  });
});
