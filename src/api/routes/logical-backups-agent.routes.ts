// The agent protocol's part for logical backups (served on the agent listener): an agent
// long-polls for the dumps of nodes it holds, renews each job's lease while pg_dump runs,
// and reports the outcome. The poll also says which jobs the agent runs: one this host holds
// that its agent does not (a restart, a lost answer) is retried at once.
import { Hono, type MiddlewareHandler } from "hono";
import { UnauthorizedError, ValidationError } from "../../domain/errors.ts";
import {
  DEFAULT_JOB_TIMING,
  loseJob,
  recordOutcome,
  type JobTiming,
} from "../../reconciler/logical-backup-jobs.ts";
import { jobSignal } from "../../reconciler/logical-backup.scheduler.ts";
import { findHostByToken, type Host } from "../../store/hosts.store.ts";
import { claimJobs, jobsLostByHost, renewLease } from "../../store/logical-backup-jobs.store.ts";
import { bearerOf } from "../auth.ts";
import type { Deps } from "../deps.ts";
import { readJson, type Json } from "../request.ts";

type AgentEnv = { Variables: { host: Host } };

const MAX_SLOTS = 8;
const ID = /^bkp-[0-9a-f]{20}$/;

function attemptOf(body: Json): number {
  const a = body.attempt;
  if (typeof a !== "number" || !Number.isInteger(a) || a < 1) {
    throw ValidationError.field("attempt", "must be the job's attempt number (an integer >= 1)");
  }
  return a;
}

export function logicalBackupAgentRoutes(deps: Deps, timing: JobTiming = DEFAULT_JOB_TIMING): Hono<AgentEnv> {
  const app = new Hono<AgentEnv>();

  const hostAuth: MiddlewareHandler<AgentEnv> = async (c, next) => {
    const bearer = bearerOf(c);
    const host = bearer ? await findHostByToken(deps.db, bearer) : null;
    if (!host) throw new UnauthorizedError("invalid host token");
    c.set("host", host);
    await next();
  };
  app.use("/hosts/self/logical-backups", hostAuth);
  app.use("/hosts/self/logical-backups/*", hostAuth);

  app.get("/hosts/self/logical-backups", async (c) => {
    const host = c.get("host");
    const slots = Math.max(0, Math.min(MAX_SLOTS, Number(c.req.query("slots") ?? 1) || 0));
    const running = (c.req.query("running") ?? "").split(",").filter((id) => ID.test(id));
    const waitMs = Math.min(Number(c.req.query("wait_ms") ?? 0) || 0, 30_000);
    for (const id of await jobsLostByHost(deps.db, host.id, running)) {
      await loseJob(deps, id, "the agent no longer runs the dump (it restarted)", timing);
    }
    const deadline = Date.now() + waitMs;
    for (;;) {
      if (deps.hostSignals.isClosed) return c.json({ error: "controller is stopping" }, 503);
      const jobs = await claimJobs(deps.db, host.id, slots, timing.leaseMs);
      if (jobs.length || Date.now() >= deadline) {
        return c.json({
          lease_ms: timing.leaseMs,
          jobs: jobs.map((j) => ({
            id: j.backup.id,
            attempt: j.backup.attempt,
            instance_id: j.instanceId,
            port: j.port,
            dbname: j.dbname,
            name: j.backup.name,
            archive: j.backup.filePath,
          })),
        });
      }
      await deps.hostSignals.wait(jobSignal(host.id), Math.max(0, deadline - Date.now()));
    }
  });

  app.post("/hosts/self/logical-backups/:id/progress", async (c) => {
    const body = await readJson(c);
    const bytes = typeof body.bytes === "number" && body.bytes >= 0 ? Math.floor(body.bytes) : 0;
    const job = { id: c.req.param("id"), hostId: c.get("host").id, attempt: attemptOf(body) };
    return c.json({ continue: await renewLease(deps.db, job, bytes, timing.leaseMs) });
  });

  app.post("/hosts/self/logical-backups/:id/finish", async (c) => {
    const body = await readJson(c);
    const status = body.status;
    if (status !== "done" && status !== "failed") {
      throw ValidationError.field("status", "must be done or failed");
    }
    const size = body.size;
    if (status === "done" && (typeof size !== "number" || !Number.isInteger(size) || size < 0)) {
      throw ValidationError.field("size", "must be the archive's size in bytes");
    }
    const accepted = await recordOutcome(
      deps,
      c.get("host").id,
      {
        id: c.req.param("id"),
        attempt: attemptOf(body),
        status,
        sizeBytes: typeof size === "number" ? size : 0,
        error: typeof body.error === "string" ? body.error.slice(0, 2000) : "",
      },
      timing,
    );
    return c.json({ accepted });
  });

  return app;
}
