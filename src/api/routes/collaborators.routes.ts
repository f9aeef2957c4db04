// Collaborators of an app or of a Dedicated database (reference §4.2, §3.4): invite by
// email, accept with the invitation token, list, set is_limited, remove (or leave).
import { Hono } from "hono";
import {
  assertCanManageCollaborators,
  assertCanRemoveCollaborator,
  assertCollaboratorRoleAllowed,
  assertInvitable,
  assertInvitationRecipient,
} from "../../domain/collaborator-rules.ts";
import { NotFoundError, ValidationError } from "../../domain/errors.ts";
import { ownersById } from "../../store/apps.store.ts";
import {
  acceptInvitation,
  deleteCollaborator,
  findCollaborator,
  findPendingInvitation,
  insertInvitation,
  listCollaborators,
  listCollaboratorsOfOwnedApps,
  setCollaboratorLimited,
  type Collaborator,
  type CollaboratorScope,
} from "../../store/collaborators.store.ts";
import { isPgError, UNIQUE_VIOLATION } from "../../store/db.ts";
import { recordEvent } from "../../store/events.store.ts";
import type { RateLimiter } from "../auth.ts";
import { requireAuth } from "../auth.ts";
import type { Deps, Env } from "../deps.ts";
import { optBool, readJson, root, str } from "../request.ts";
import { resolveScope, scopeIdentity, type Scope } from "../scope.ts";
import { validateEmail } from "./tokens.routes.ts";
import { scopeAppJson } from "./apps.routes.ts";

export const collaboratorJson = (k: Collaborator) => ({
  id: k.id,
  // A Dedicated database is addressed as an app: its id stands in app_id.
  app_id: k.appId ?? k.databaseId,
  email: k.email,
  // The reference shows "n/a" until the invitation is accepted.
  username: k.username ?? "n/a",
  status: k.status,
  user_id: k.userId,
  is_limited: k.isLimited,
});

const collaboratorScope = (s: Scope): CollaboratorScope =>
  s.kind === "app" ? { kind: "app", id: s.app.id } : { kind: "database", id: s.database.id };

const modelOf = (s: Scope) => (s.kind === "app" ? "shared" : "dedicated");

/** Events of both scope kinds are filed under the id the scope has as an app. */
const eventScope = (s: Scope) =>
  s.kind === "app" ? { appId: s.app.id } : { appId: s.database.id, databaseId: s.database.id };

export function collaboratorRoutes(deps: Deps, limiter: RateLimiter): Hono<Env> {
  const app = new Hono<Env>();
  const auth = requireAuth(deps, limiter);

  const invitationLink = (region: string, token: string): string => {
    const prefix = region === deps.config.defaultRegion ? "" : `/regions/${region}`;
    return `${deps.config.publicUrl}${prefix}/v1/apps/collaboration?token=${token}`;
  };

  // Registered before /apps/:app routes (see app.ts): "collaboration" is not an app name.
  app.get("/apps/collaboration", auth, async (c) => {
    const token = c.req.query("token");
    if (!token) throw ValidationError.field("token", "is required: use the invitation link");
    const user = c.get("user");
    const scopeId = await deps.db.tx(async (tx) => {
      const found = await findPendingInvitation(tx, token);
      // An invitation to a scope of another region is accepted through that region's URL.
      if (!found || found.region !== c.get("region")) throw new NotFoundError("invitation");
      const inv = found.invitation;
      assertInvitationRecipient(user.email, inv.email);
      await acceptInvitation(tx, inv.id, user.id);
      const scopeIds = inv.appId
        ? { appId: inv.appId }
        : { appId: inv.databaseId, databaseId: inv.databaseId };
      await recordEvent(tx, {
        ...scopeIds,
        userId: user.id,
        type: "accept_collaborator",
        typeData: { collaborator: { email: inv.email, username: user.username, is_limited: inv.isLimited } },
      });
      return (inv.appId ?? inv.databaseId)!;
    });
    // As the reference: the app joined, unrooted.
    return c.json(await scopeAppJson(deps.db, await resolveScope(deps, c, scopeId)));
  });

  app.get("/collaborators", auth, async (c) => {
    const list = await listCollaboratorsOfOwnedApps(deps.db, c.get("region"), c.get("user").id);
    return c.json({ collaborators: list.map((k) => ({ ...collaboratorJson(k), app_name: k.appName })) });
  });

  app.get("/apps/:app/collaborators", auth, async (c) => {
    const scope = await resolveScope(deps, c, c.req.param("app"));
    const list = await listCollaborators(deps.db, collaboratorScope(scope));
    return c.json({ collaborators: list.map(collaboratorJson) });
  });

  app.post("/apps/:app/collaborators", auth, async (c) => {
    const scope = await resolveScope(deps, c, c.req.param("app"));
    assertCanManageCollaborators(scope.role);
    const body = root(await readJson(c), "collaborator");
    const email = validateEmail(str(body, "email", { max: 254 }));
    const isLimited = optBool(body, "is_limited") ?? false;
    assertCollaboratorRoleAllowed(modelOf(scope), isLimited);
    const { ownerId } = scopeIdentity(scope);
    const owner = (await ownersById(deps.db, [ownerId])).get(ownerId);
    const existing = await listCollaborators(deps.db, collaboratorScope(scope));
    assertInvitable(email, { ownerEmail: owner?.email ?? "", invitedEmails: existing.map((k) => k.email) });
    try {
      const { collaborator, token } = await deps.db.tx(async (tx) => {
        const made = await insertInvitation(tx, collaboratorScope(scope), { email, isLimited });
        await recordEvent(tx, {
          ...eventScope(scope),
          userId: c.get("user").id,
          type: "new_collaborator",
          typeData: { collaborator: { email, is_limited: isLimited } },
        });
        return made;
      });
      const link = invitationLink(c.get("region"), token);
      return c.json({ collaborator: { ...collaboratorJson(collaborator), invitation_link: link } }, 201);
    } catch (err) {
      // Two invitations of one email at once: the second loses on the unique constraint.
      if (isPgError(err, UNIQUE_VIOLATION))
        throw ValidationError.field("email", "is already a collaborator or invited");
      throw err;
    }
  });

  app.patch("/apps/:app/collaborators/:id", auth, async (c) => {
    const scope = await resolveScope(deps, c, c.req.param("app"));
    assertCanManageCollaborators(scope.role);
    const body = root(await readJson(c), "collaborator");
    const isLimited = optBool(body, "is_limited");
    if (isLimited === undefined) throw ValidationError.field("is_limited", "is required: true or false");
    assertCollaboratorRoleAllowed(modelOf(scope), isLimited);
    const k = await findCollaborator(deps.db, collaboratorScope(scope), c.req.param("id"));
    if (!k) throw new NotFoundError("collaborator");
    if (k.isLimited !== isLimited) {
      await deps.db.tx(async (tx) => {
        await setCollaboratorLimited(tx, k.id, isLimited);
        await recordEvent(tx, {
          ...eventScope(scope),
          userId: c.get("user").id,
          type: "change_collaborator_role",
          typeData: { collaborator: { email: k.email, username: k.username, is_limited: isLimited } },
        });
      });
    }
    return c.json({ collaborator: collaboratorJson({ ...k, isLimited }) });
  });

  app.delete("/apps/:app/collaborators/:id", auth, async (c) => {
    const scope = await resolveScope(deps, c, c.req.param("app"));
    const k = await findCollaborator(deps.db, collaboratorScope(scope), c.req.param("id"));
    if (!k) throw new NotFoundError("collaborator");
    const me = c.get("user").id;
    assertCanRemoveCollaborator(scope.role, k.userId === me);
    await deps.db.tx(async (tx) => {
      await deleteCollaborator(tx, k.id);
      await recordEvent(tx, {
        ...eventScope(scope),
        userId: me,
        type: "delete_collaborator",
        typeData: { collaborator: { email: k.email, username: k.username } },
      });
    });
    return c.body(null, 204);
  });

  return app;
}
