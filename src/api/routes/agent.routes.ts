// The controller side of the agent protocol (served on the TLS agent listener).
// An agent registers once with the join token and receives its own host token; after that
// it long-polls its desired instances and reports what it observes (the heartbeat).
import { timingSafeEqual } from "node:crypto";
import { Hono } from "hono";
import { UnauthorizedError, ValidationError } from "../../domain/errors.ts";
import { newTokenSecret } from "../../store/users.store.ts";
import {
  findHostByName,
  findHostByToken,
  heartbeat,
  insertHost,
  updateHostRegistration,
  type Host,
  type HostRegistration,
} from "../../store/hosts.store.ts";
import {
  applyReport,
  desiredVersion,
  instancesOfHost,
  type InstanceReport,
  type InstanceStatus,
} from "../../store/instances.store.ts";
import { MAX_TAIL_BYTES, pendingLogRequests, saveLogTails } from "../../store/instance-logs.store.ts";
import { enqueueReconcile } from "../../store/reconcile-queue.store.ts";
import { getDatabase, scopeIdOf } from "../../store/databases.store.ts";
import { recordEvent } from "../../store/events.store.ts";
import {
  switchoverInFlight,
  switchoverOrders,
  versionWithSwitchovers,
} from "../../store/switchovers.store.ts";
import { instanceKeys } from "../../store/instance-keys.store.ts";
import { applyBackupReports } from "../../reconciler/backup-reports.ts";
import { applyDcsReport, databasesWaitingInRegion, dcsMembersOfHost } from "../../store/dcs.store.ts";
import type { Deps } from "../deps.ts";
import { bearerOf } from "../auth.ts";
import { readJson, str, type Json } from "../request.ts";

type AgentEnv = { Variables: { host: Host } };

/** A report carries every instance of the host (~250 bytes each): room for thousands. */
const MAX_REPORT_BYTES = 8 * 1024 * 1024;

const STATUSES: InstanceStatus[] = [
  "booting",
  "running",
  "restarting",
  "stopped",
  "removing",
  "removed",
  "failed",
];

function num(o: Json, field: string, min: number): number {
  const v = o[field];
  if (typeof v !== "number" || !Number.isFinite(v) || v < min) {
    throw ValidationError.field(field, `must be a number >= ${min}`);
  }
  return v;
}

function parseRegistration(body: Json, deps: Deps): HostRegistration {
  const region = str(body, "region", { max: 40 });
  const regionConfig = deps.config.regions.find((r) => r.name === region);
  if (!regionConfig) throw ValidationError.field("region", `unknown region ${region}`);
  const az = str(body, "az", { max: 60 });
  if (!regionConfig.azs.includes(az)) {
    throw ValidationError.field("az", `must be one of ${regionConfig.azs.join(", ")}`);
  }
  const pool = str(body, "pool");
  if (pool !== "shared" && pool !== "dedicated")
    throw ValidationError.field("pool", "must be shared or dedicated");
  const isolation = body.isolation;
  return {
    name: str(body, "name", { max: 63 }),
    region,
    az,
    pool,
    address: str(body, "address", { max: 45 }),
    capacityVcpu: num(body, "capacity_vcpu", 0.01),
    capacityRamMb: num(body, "capacity_ram_mb", 64),
    capacityDiskGb: num(body, "capacity_disk_gb", 1),
    isolation:
      typeof isolation === "object" && isolation !== null ? (isolation as Record<string, unknown>) : {},
  };
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export function agentRoutes(deps: Deps, joinToken: string): Hono<AgentEnv> {
  const app = new Hono<AgentEnv>();

  // Registration: the join token admits a new host; a known host must prove it is itself.
  app.post("/register", async (c) => {
    const bearer = bearerOf(c);
    const reg = parseRegistration(await readJson(c), deps);
    const existing = await findHostByName(deps.db, reg.name);
    if (existing) {
      const caller = bearer ? await findHostByToken(deps.db, bearer) : null;
      if (!caller || caller.id !== existing.id) {
        throw new UnauthorizedError(`host ${reg.name} is registered: present its own host token`);
      }
      const host = await updateHostRegistration(deps.db, existing.id, reg);
      return c.json({ host: { id: host.id, name: host.name } });
    }
    if (!bearer || !sameSecret(bearer, joinToken)) throw new UnauthorizedError("invalid join token");
    const token = newTokenSecret().replace(/^tk-us-/, "tk-host-");
    const host = await insertHost(deps.db, reg, token);
    deps.log.info("host registered", { host: host.id, name: host.name, az: host.az, pool: host.pool });
    return c.json({ host: { id: host.id, name: host.name }, token }, 201);
  });

  app.use("/hosts/*", async (c, next) => {
    const bearer = bearerOf(c);
    const host = bearer ? await findHostByToken(deps.db, bearer) : null;
    if (!host) throw new UnauthorizedError("invalid host token");
    c.set("host", host);
    await next();
  });

  // Long poll: answers at once when the desired set differs from the agent's version.
  app.get("/hosts/self/desired", async (c) => {
    const host = c.get("host");
    const known = c.req.query("version") ?? "";
    const waitMs = Math.min(Number(c.req.query("wait_ms") ?? 0) || 0, 30_000);
    const deadline = Date.now() + waitMs;
    for (;;) {
      if (deps.hostSignals.isClosed) return c.json({ error: "controller is stopping" }, 503);
      // The host's database instances, and the region's etcd member when it runs one.
      const instances = [
        ...(await instancesOfHost(deps.db, host.id)),
        ...(await dcsMembersOfHost(deps.db, host.id)),
      ];
      // A planned switchover is handed to the nodes of its cluster (ha-nodes.ts acts on it).
      const switchovers = await switchoverOrders(
        deps.db,
        instances.filter((i) => i.kind === "node").map((i) => i.databaseId),
      );
      const version = versionWithSwitchovers(desiredVersion(instances), switchovers.values());
      if (version !== known || Date.now() >= deadline) {
        // Each node's encryption-at-rest key, only ever in this answer to its own host.
        const keys = await instanceKeys(
          deps.db,
          deps.masterKey,
          instances.filter((i) => i.kind === "node" && i.desiredState !== "deleted").map((i) => i.id),
        );
        return c.json({
          version,
          instances: instances.map((i) => ({
            id: i.id,
            database_id: i.databaseId,
            kind: i.kind,
            port: i.port,
            spec: i.spec,
            spec_generation: i.specGeneration,
            desired_state: i.desiredState,
            ...(i.kind === "node" && switchovers.has(i.databaseId)
              ? { switchover: switchovers.get(i.databaseId) }
              : {}),
            ...(keys.has(i.id) ? { encryption_key: keys.get(i.id)!.toString("base64") } : {}),
          })),
        });
      }
      await deps.hostSignals.wait(host.id, Math.max(0, deadline - Date.now()));
    }
  });

  app.post("/hosts/self/report", async (c) => {
    const host = c.get("host");
    // Every instance of the host, with its usage: hundreds on a full shared host.
    const body = await readJson(c, MAX_REPORT_BYTES);
    const list = Array.isArray(body.instances) ? (body.instances as Json[]) : [];
    const reports: InstanceReport[] = list.map((r) => {
      const status = String(r.status) as InstanceStatus;
      if (!STATUSES.includes(status)) throw ValidationError.field("status", `unknown status ${status}`);
      return {
        id: String(r.id),
        observedGeneration: Number(r.observed_generation) || 0,
        status,
        statusMessage: typeof r.status_message === "string" ? r.status_message : "",
        role: typeof r.role === "string" ? r.role : "",
        usage: numbersOf(r.usage),
        atRest: atRestOf(r.at_rest),
      };
    });
    const cameBack = await heartbeat(deps.db, host.id);
    const promotions: Array<{ databaseId: string; instanceId: string }> = [];
    const changed = await applyReport(deps.db, host.id, reports, promotions);
    for (const p of promotions) await recordPromotion(deps, p.databaseId, p.instanceId, host.name);
    for (const id of await applyBackupReports(deps, host.id, list)) changed.push(id);
    // HA databases wait on their region's etcd cluster: a member's change wakes them.
    for (const region of await applyDcsReport(deps.db, host.id, reports)) {
      changed.push(...(await databasesWaitingInRegion(deps.db, region)));
    }
    if (cameBack) {
      deps.log.info("host is ready", { host: host.id, name: host.name });
      // Its databases may say the host is unreachable: let them look again now.
      for (const i of await instancesOfHost(deps.db, host.id)) changed.push(i.databaseId);
      // Databases waiting for a host (placement, the DCS) may fit now: without this they
      // would wait for their next recheck, up to a minute.
      changed.push(...(await databasesWaitingInRegion(deps.db, host.region)));
    }
    for (const databaseId of new Set(changed)) await enqueueReconcile(deps.db, databaseId);
    if (changed.length) deps.kickReconciler();
    // The agent has no listener: log tails the database API waits for are asked for here.
    return c.json({ ok: true, logs_wanted: await pendingLogRequests(deps.db, host.id) });
  });

  app.post("/hosts/self/logs", async (c) => {
    const body = await readJson(c, 2 * MAX_TAIL_BYTES);
    const list = Array.isArray(body.logs) ? (body.logs as Json[]) : [];
    const tails = list
      .filter((l) => typeof l.id === "string" && typeof l.text === "string")
      .map((l) => ({ id: l.id as string, text: l.text as string }));
    await saveLogTails(deps.db, c.get("host").id, tails);
    return c.json({ ok: true });
  });

  return app;
}

/** A node of an HA cluster became its leader: the database's events say so. */
async function recordPromotion(deps: Deps, databaseId: string, instanceId: string, hostName: string) {
  const db = await getDatabase(deps.db, databaseId);
  if (!db) return;
  // A planned switchover to this node is recorded as database_switchover by the reconciler.
  if ((await switchoverInFlight(deps.db, databaseId))?.candidateId === instanceId) return;
  deps.log.info("new leader", { db: databaseId, inst: instanceId, host: hostName });
  await recordEvent(deps.db, {
    appId: scopeIdOf(db),
    databaseId,
    type: "database_leader_changed",
    typeData: { addon_id: db.id, resource_id: db.resourceId, new_leader: instanceId, host: hostName },
  });
}

/** A node's `{encrypted, detail}`; null when the agent did not say (a gateway, an older agent). */
function atRestOf(v: unknown): { encrypted: boolean; detail: string } | null {
  if (typeof v !== "object" || v === null) return null;
  const o = v as Json;
  if (typeof o.encrypted !== "boolean") return null;
  return { encrypted: o.encrypted, detail: typeof o.detail === "string" ? o.detail.slice(0, 500) : "" };
}

function numbersOf(v: unknown): Record<string, number> {
  if (typeof v !== "object" || v === null) return {};
  return Object.fromEntries(
    Object.entries(v as Json).filter(
      (e): e is [string, number] => typeof e[1] === "number" && Number.isFinite(e[1]),
    ),
  );
}
