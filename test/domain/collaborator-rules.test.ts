import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  assertCanAccessVariables,
  assertCanDestroyScope,
  assertCanManageCollaborators,
  assertCanRemoveCollaborator,
  assertCollaboratorRoleAllowed,
  assertInvitable,
  assertInvitationRecipient,
  assertScopeTakesUserVariables,
  assertVariableWritable,
  canAccessVariables,
  canRemoveCollaborator,
} from "../../src/domain/collaborator-rules.ts";
import { ForbiddenError, ValidationError } from "../../src/domain/errors.ts";
import type { Role } from "../../src/domain/rules.ts";

/** The field a ValidationError names, or the ForbiddenError's reason, or "ok". */
function outcome(fn: () => void): string {
  try {
    fn();
    return "ok";
  } catch (err) {
    if (err instanceof ValidationError) return `422 ${Object.keys(err.fields).join(",")}`;
    if (err instanceof ForbiddenError) return `403 ${err.reason}`;
    throw err;
  }
}

describe("collaborator rules", () => {
  it("limited collaborators may not manage collaborators", () => {
    const table: Array<[Role, string]> = [
      ["owner", "ok"],
      ["collaborator", "ok"],
      ["limited", "403 insufficient_role"],
      ["none", "403 insufficient_role"],
    ];
    for (const [role, want] of table) {
      assert.equal(
        outcome(() => assertCanManageCollaborators(role)),
        want,
        role,
      );
    }
  });

  it("Dedicated databases have only the Collaborator role", () => {
    const table: Array<["shared" | "dedicated", boolean, string]> = [
      ["shared", false, "ok"],
      ["shared", true, "ok"],
      ["dedicated", false, "ok"],
      ["dedicated", true, "422 is_limited"],
    ];
    for (const [model, limited, want] of table) {
      assert.equal(
        outcome(() => assertCollaboratorRoleAllowed(model, limited)),
        want,
        `${model} ${limited}`,
      );
    }
    assert.throws(() => assertCollaboratorRoleAllowed("dedicated", true), /only the Collaborator role/);
  });

  it("the owner and already invited emails cannot be invited", () => {
    const scope = { ownerEmail: "owner@example.test", invitedEmails: ["bob@example.test"] };
    const table: Array<[string, string]> = [
      ["carol@example.test", "ok"],
      ["owner@example.test", "422 email"],
      ["OWNER@example.test", "422 email"],
      ["bob@example.test", "422 email"],
      ["Bob@Example.test", "422 email"],
    ];
    for (const [email, want] of table)
      assert.equal(
        outcome(() => assertInvitable(email, scope)),
        want,
        email,
      );
  });

  it("anyone may leave; removing others needs the right to manage collaborators", () => {
    const table: Array<[Role, boolean, boolean]> = [
      ["owner", false, true],
      ["collaborator", false, true],
      ["collaborator", true, true],
      ["limited", true, true],
      ["limited", false, false],
      ["none", true, false],
    ];
    for (const [role, self, want] of table) {
      assert.equal(canRemoveCollaborator(role, self), want, `${role} self=${self}`);
      assert.equal(outcome(() => assertCanRemoveCollaborator(role, self)) === "ok", want);
    }
  });

  it("an invitation is accepted only by its recipient", () => {
    assert.equal(
      outcome(() => assertInvitationRecipient("a@x.test", "A@X.test")),
      "ok",
    );
    assert.equal(
      outcome(() => assertInvitationRecipient("b@x.test", "a@x.test")),
      "403 invitation_email_mismatch",
    );
  });

  it("only the owner deletes or renames", () => {
    const table: Array<[Role, string]> = [
      ["owner", "ok"],
      ["collaborator", "403 owner_only"],
      ["limited", "403 owner_only"],
    ];
    for (const [role, want] of table) {
      assert.equal(
        outcome(() => assertCanDestroyScope(role, "delete")),
        want,
        role,
      );
      assert.equal(
        outcome(() => assertCanDestroyScope(role, "rename")),
        want,
        role,
      );
    }
  });

  it("variables: limited collaborators have no access; database-written ones are read-only", () => {
    const table: Array<[Role, boolean]> = [
      ["owner", true],
      ["collaborator", true],
      ["limited", false],
      ["none", false],
    ];
    for (const [role, want] of table) {
      assert.equal(canAccessVariables(role), want, role);
      assert.equal(outcome(() => assertCanAccessVariables(role)) === "ok", want);
    }
    assert.equal(
      outcome(() => assertVariableWritable({ name: "FOO", databaseId: null })),
      "ok",
    );
    assert.equal(
      outcome(() => assertVariableWritable({ name: "DATABASE_URL", databaseId: "ad-1" })),
      "422 variable",
    );
    assert.equal(
      outcome(() => assertScopeTakesUserVariables("app")),
      "ok",
    );
    assert.equal(
      outcome(() => assertScopeTakesUserVariables("database")),
      "422 variable",
    );
  });
});
