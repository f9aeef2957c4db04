// Database logs (reference §2.12, §4.3). `GET /databases/:id/logs` answers `{url}` as the
// reference does, pointing here: `/logs/stream?token=` serves the last lines of each node's
// PostgreSQL log as text. The log is on the node's host, whose agent has no listener: the
// controller records a request, the agent sees it in the answer to its next report (every
// few seconds) and sends the tail of the current log file; the stream waits for it.
import { createHmac } from "node:crypto";
import { Hono } from "hono";
import { CellarError, UnauthorizedError, ValidationError } from "../../domain/errors.ts";
import { findLiveDatabase } from "../../store/databases.store.ts";
import { instancesOfDatabase } from "../../store/instances.store.ts";
import { logTails, requestLogTails, type LogTail } from "../../store/instance-logs.store.ts";
import type { RateLimiter } from "../auth.ts";
import { requireAuth } from "../auth.ts";
import type { Deps } from "../deps.ts";
import { signJwt, verifyJwt } from "../jwt.ts";
import { requireDatabaseAccess, type DbEnv } from "./database-api.routes.ts";

const URL_TTL_S = 5 * 60;
const WAIT_MS = 10_000;
const POLL_MS = 200;
const DEFAULT_LINES = 200;
const MAX_LINES = 1000;

/**
 * Log URLs are signed with a key of their own: a leaked URL (they end up in shell history
 * and proxy logs) opens this database's log for a few minutes, never the database API.
 */
const logUrlKey = (deps: Deps): Buffer =>
  createHmac("sha256", deps.jwtSecret).update("cellar log urls").digest();

async function nodeIds(deps: Deps, databaseId: string): Promise<string[]> {
  const instances = await instancesOfDatabase(deps.db, databaseId);
  return instances.filter((i) => i.kind === "node" && i.desiredState !== "deleted").map((i) => i.id);
}

function linesParam(raw: string | undefined): number {
  if (raw === undefined || raw === "") return DEFAULT_LINES;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > MAX_LINES) {
    throw ValidationError.field("n", `must be an integer from 1 to ${MAX_LINES}`);
  }
  return n;
}

/** Waits (bounded) until every node's tail was read after `since`; returns what is there then. */
async function freshTails(
  deps: Deps,
  ids: string[],
  since: Date,
): Promise<{ tails: LogTail[]; fresh: boolean }> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const tails = await logTails(deps.db, ids);
    const fresh = tails.length === ids.length && tails.every((t) => t.readAt !== null && t.readAt >= since);
    if (fresh || Date.now() >= deadline) return { tails, fresh };
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

function render(tails: LogTail[], lines: number): string {
  const lastLines = (text: string) => {
    const all = text.split("\n");
    if (all.at(-1) === "") all.pop();
    return all.slice(-lines).join("\n") + (all.length ? "\n" : "");
  };
  if (tails.length === 1) return lastLines(tails[0]!.tail);
  return tails.map((t) => `==> ${t.instanceId} <==\n${lastLines(t.tail)}`).join("\n");
}

export function databaseLogRoutes(deps: Deps, limiter: RateLimiter): Hono<DbEnv> {
  const app = new Hono<DbEnv>();
  const auth = requireAuth(deps, limiter, { addonTokens: true });
  const access = requireDatabaseAccess(deps);

  app.get("/databases/:id/logs", auth, access, async (c) => {
    const db = c.get("database");
    const claims = c.get("claims");
    // Asked now, so that the tail is usually there when the client follows the URL.
    const ids = await nodeIds(deps, db.id);
    if (ids.length) await requestLogTails(deps.db, ids);
    const iat = Math.floor(deps.now().getTime() / 1000);
    const token = signJwt(
      { sub: claims.sub, tok: claims.tok, db: db.id, iat, exp: iat + URL_TTL_S, iss: "cellar" },
      logUrlKey(deps),
    );
    const base = `${deps.config.publicUrl}/regions/${db.region}/api/databases/${encodeURIComponent(db.id)}`;
    return c.json({ url: `${base}/logs/stream?token=${token}` });
  });

  app.get("/databases/:id/logs/stream", async (c) => {
    const id = c.req.param("id");
    const claims = verifyJwt(
      c.req.query("token") ?? "",
      logUrlKey(deps),
      Math.floor(deps.now().getTime() / 1000),
    );
    if (!claims || claims.db !== id) {
      throw new UnauthorizedError(
        "invalid or expired log URL: ask GET /api/databases/:id/logs for a new one",
      );
    }
    const lines = linesParam(c.req.query("n"));
    const db = await findLiveDatabase(deps.db, id);
    if (!db || db.region !== c.get("region"))
      throw new UnauthorizedError("the database of this log URL is gone");
    const ids = await nodeIds(deps, id);
    if (!ids.length) throw new CellarError("unavailable", `database ${id} has no node yet: it has no log`);
    const since = await requestLogTails(deps.db, ids);
    const { tails, fresh } = await freshTails(deps, ids, since);
    if (!tails.some((t) => t.readAt !== null)) {
      throw new CellarError(
        "unavailable",
        "the database's host did not send its log in time: retry in a few seconds",
      );
    }
    const readAt = Math.min(...tails.map((t) => t.readAt?.getTime() ?? 0));
    c.header("X-Cellar-Log-Read-At", new Date(readAt).toISOString());
    // A host that did not answer in time gets its last known tail, marked as such.
    if (!fresh) c.header("Warning", '110 cellar "log tail is not fresh: the host did not answer in time"');
    c.header("Cache-Control", "no-store");
    return c.text(render(tails, lines));
  });

  return app;
}
