// Who may do what on an app or a Dedicated database scope: collaborators, destruction,
// environment variables. Pure functions that throw typed errors naming the rule.
import type { ArchitectureModel } from "./catalog.ts";
import { ForbiddenError, ValidationError } from "./errors.ts";
import { allowedCollaboratorRoles, canDestroyScope, canManageCollaborators, type Role } from "./rules.ts";

export function assertCanManageCollaborators(role: Role): void {
  if (canManageCollaborators(role)) return;
  throw new ForbiddenError(
    "limited collaborators may not invite, change or remove collaborators",
    "insufficient_role",
  );
}

/** Dedicated databases know only the Collaborator role; Shared apps also have Limited. */
export function assertCollaboratorRoleAllowed(model: ArchitectureModel, isLimited: boolean): void {
  const wanted = isLimited ? "limited" : "collaborator";
  if (allowedCollaboratorRoles(model).includes(wanted)) return;
  throw ValidationError.field(
    "is_limited",
    "must be false: Dedicated Resources databases have only the Collaborator role (no Limited Collaborator)",
  );
}

/** Emails are compared lowercased: the store keeps them lowercased. */
export function assertInvitable(email: string, scope: { ownerEmail: string; invitedEmails: string[] }): void {
  const e = email.toLowerCase();
  if (e === scope.ownerEmail.toLowerCase()) {
    throw ValidationError.field("email", "is the owner's: the owner already has every right");
  }
  if (scope.invitedEmails.some((x) => x.toLowerCase() === e)) {
    throw ValidationError.field("email", "is already a collaborator or invited");
  }
}

/** Anyone may stop collaborating; removing someone else needs the right to manage collaborators. */
export function canRemoveCollaborator(role: Role, isSelf: boolean): boolean {
  if (role === "none") return false;
  return isSelf || canManageCollaborators(role);
}

export function assertCanRemoveCollaborator(role: Role, isSelf: boolean): void {
  if (canRemoveCollaborator(role, isSelf)) return;
  throw new ForbiddenError(
    "limited collaborators may remove only themselves from the collaborators",
    "insufficient_role",
  );
}

/** An invitation is accepted only by the account it was sent to. */
export function assertInvitationRecipient(userEmail: string, invitedEmail: string): void {
  if (userEmail.toLowerCase() === invitedEmail.toLowerCase()) return;
  throw new ForbiddenError(
    "this invitation was sent to another email address: sign in with that account to accept it",
    "invitation_email_mismatch",
  );
}

export function assertCanDestroyScope(role: Role, action: "delete" | "rename"): void {
  if (canDestroyScope(role)) return;
  throw new ForbiddenError(`only the owner may ${action} it`, "owner_only");
}

/**
 * Variables hold add-on credentials (DATABASE_URL and the like), and the Limited role
 * exists to keep its holders away from database data: they get no access to variables.
 */
export function canAccessVariables(role: Role): boolean {
  return role === "owner" || role === "collaborator";
}

export function assertCanAccessVariables(role: Role): void {
  if (canAccessVariables(role)) return;
  throw new ForbiddenError(
    "limited collaborators may not read or change environment variables: they hold database credentials",
    "insufficient_role",
  );
}

/** Variables written by a database (its connection URL...) belong to it, not to users. */
export function assertVariableWritable(v: { name: string; databaseId: string | null }): void {
  if (v.databaseId === null) return;
  throw ValidationError.field(
    "variable",
    `${v.name} is managed by its database add-on and is read-only: change the add-on instead`,
  );
}

/** Cellar runs no application on a Dedicated database scope: its environment is the database's own. */
export function assertScopeTakesUserVariables(kind: "app" | "database"): void {
  if (kind === "app") return;
  throw ValidationError.field(
    "variable",
    "a Dedicated Resources database has no user-defined variables: its environment is managed by Cellar",
  );
}
