// The Cellar side of the backup benchmark: add-ons, restores, forks and backups driven through
// the public API only (the agent's files are read for the bare side's config path).
import fs from "node:fs/promises";
import path from "node:path";
import pg from "pg";
import { deleteAddons, provisionAddon, type BenchCellar } from "./cellar.ts";
import { waitUntil } from "./stats.ts";

const LONG_MS = 60 * 60_000;

export interface Addon {
  app: string;
  id: string;
  url: string;
  dbname: string;
}

export function clientOf(url: string, ca: string): pg.Client {
  const u = new URL(url);
  const client = new pg.Client({
    host: u.hostname,
    port: Number(u.port),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    database: u.pathname.slice(1),
    ssl: { ca, rejectUnauthorized: true },
    connectionTimeoutMillis: 10_000,
  });
  client.on("error", () => undefined);
  return client;
}

/** Rows of ~1 kB into `big` until the database holds `mb` MiB. */
export async function loadRows(url: string, ca: string, mb: number) {
  const t0 = performance.now();
  const c = clientOf(url, ca);
  await c.connect();
  try {
    await c.query("CREATE TABLE big (id bigint PRIMARY KEY, pad text NOT NULL)");
    let rows = 0;
    let bytes = 0;
    const batch = Math.max(1000, Math.min(100_000, mb * 100));
    while (bytes < mb * 1024 * 1024) {
      await c.query(
        `INSERT INTO big SELECT g, repeat(md5(g::text), 30) FROM generate_series($1::bigint, $2::bigint) g`,
        [rows + 1, rows + batch],
      );
      rows += batch;
      bytes = Number((await c.query("SELECT pg_database_size(current_database()) AS b")).rows[0].b);
    }
    return { rows, bytes, ms: performance.now() - t0 };
  } finally {
    await c.end();
  }
}

export class CellarBackups {
  constructor(
    private readonly c: BenchCellar,
    private readonly host: string,
  ) {}

  async addon(app: string, plan: string): Promise<Addon> {
    const created = await this.c.api("POST", "/v1/apps", { app: { name: app } });
    if (created.status !== 201) throw new Error(`creating app ${app}: ${created.status}`);
    const p = await provisionAddon(this.c, app, plan, { timeoutMs: 300_000, pollMs: 200 });
    return { app, id: p.addonId, url: p.url, dbname: new URL(p.url).pathname.slice(1) };
  }

  async dbApi(a: Addon, method: string, p: string, body?: unknown) {
    const tok = await this.c.api("POST", `/v1/apps/${a.app}/addons/${a.id}/token`);
    const res = await fetch(`${this.c.controller.url}/api/databases/${a.id}${p}`, {
      method,
      headers: { authorization: `Bearer ${tok.json.addon.token}`, "content-type": "application/json" },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null };
  }

  async sql<R extends pg.QueryResultRow>(a: Addon, text: string): Promise<R[]> {
    const c = clientOf(a.url, this.c.regionCa);
    await c.connect();
    try {
      return (await c.query<R>(text)).rows;
    } finally {
      await c.end();
    }
  }

  async serverNow(a: Addon): Promise<Date> {
    return (await this.sql<{ t: Date }>(a, "SELECT clock_timestamp() AS t"))[0]!.t;
  }

  /**
   * Rows committed before and after a target time T. Returns T and a time after the second
   * row: once the archive passes it, it holds a commit after T, which a bare restore to T
   * needs (Cellar's restore makes one itself).
   */
  async markTarget(a: Addon): Promise<{ target: Date; after: Date }> {
    await this.sql(
      a,
      "CREATE TABLE IF NOT EXISTS marks (id serial PRIMARY KEY, at timestamptz DEFAULT now())",
    );
    await this.sql(a, "INSERT INTO marks DEFAULT VALUES");
    await new Promise((r) => setTimeout(r, 100));
    const target = await this.serverNow(a);
    await new Promise((r) => setTimeout(r, 100));
    await this.sql(a, "INSERT INTO marks DEFAULT VALUES");
    return { target, after: await this.serverNow(a) };
  }

  async countMarks(a: Addon): Promise<number> {
    return Number((await this.sql<{ n: string }>(a, "SELECT count(*) AS n FROM marks"))[0]!.n);
  }

  async window(a: Addon): Promise<{ earliest?: string; latest?: string }> {
    const w = (await this.dbApi(a, "GET", "/pitr/recovery_window")).json.recovery_window;
    return { earliest: w.earliest_recoverable_at, latest: w.latest_recoverable_at };
  }

  async waitWindow(a: Addon): Promise<void> {
    await waitUntil(
      "a recovery window",
      LONG_MS,
      async () => (await this.window(a)).earliest !== undefined,
      500,
    );
  }

  async waitArchivedPast(a: Addon, t: Date): Promise<void> {
    await waitUntil(
      "the archive to pass the target",
      LONG_MS,
      async () => {
        const { latest } = await this.window(a);
        return latest !== undefined && Date.parse(latest) > t.getTime();
      },
      500,
    );
  }

  /** A PITR restore in place: POST -> operation done. */
  async restore(a: Addon, t: Date): Promise<{ ms: number; doneAt: number; opId: string; postedAt: Date }> {
    const postedAt = new Date();
    const t0 = performance.now();
    const res = await this.dbApi(a, "POST", "/pitr/restore", { restore_time: t.toISOString() });
    if (res.status !== 201) throw new Error(`restore: ${res.status} ${JSON.stringify(res.json)}`);
    const opId = res.json.operation.id as string;
    let status = "";
    await waitUntil(
      "the restore operation",
      LONG_MS,
      async () => {
        const op = (await this.c.api("GET", `/v1/apps/${a.app}/operations/${opId}`)).json.operation;
        status = op.status;
        if (status === "error") throw new Error(`restore failed: ${op.error}`);
        return status === "done";
      },
      200,
    );
    const doneAt = performance.now();
    return { ms: doneAt - t0, doneAt, opId, postedAt };
  }

  /**
   * Where a restore in place spent its time, from the POST to the operation seen done: the
   * controller's timestamps (operation, restore row), the agent's steps (its state file
   * beside the node, restore.ts) and the bench's own clock (same machine, same clock).
   */
  async restoreBreakdown(a: Addon, r: { opId: string; postedAt: Date; ms: number }): Promise<string[]> {
    const { rows } = await this.c.controller.deps.db.query(
      `SELECT o.created_at, o.finished_at, p.finished_at AS reported_at
       FROM operations o JOIN pitr_restores p ON p.operation_id = o.id WHERE o.id = $1`,
      [r.opId],
    );
    const row = rows[0] as { created_at: Date; finished_at: Date; reported_at: Date };
    const state = JSON.parse(
      await fs.readFile(path.join(await this.nodeDirOf(a), "backup-restore.json"), "utf8"),
    ) as { lastSteps?: { steps: Array<{ step: string; at: string; ms: number }> } };
    const steps = state.lastSteps?.steps ?? [];
    const t0 = r.postedAt.getTime();
    const at = (d: Date | string) => `+${((new Date(d).getTime() - t0) / 1000).toFixed(2)} s`;
    const lines = [`  ${at(row.created_at)} operation created (API transaction)`];
    for (const s of steps) lines.push(`  ${at(s.at)} ${s.step}: ${(s.ms / 1000).toFixed(2)} s`);
    const last = steps.at(-1);
    if (last) lines.push(`  ${at(new Date(Date.parse(last.at) + last.ms))} restore ended in the agent`);
    lines.push(
      `  ${at(row.reported_at)} outcome reported to the controller (node converged, report)`,
      `  ${at(row.finished_at)} operation done (reconcile pass: TLS check, phase running)`,
      `  +${(r.ms / 1000).toFixed(2)} s seen done by the bench (polls every 200 ms)`,
    );
    return lines;
  }

  async backups(a: Addon): Promise<Array<Record<string, any>>> {
    return (await this.dbApi(a, "GET", "/pitr/backups")).json.continuous_backups;
  }

  /** The full backup the agent takes after `since` (a perf time): when the API lists it. */
  async nextFullBackup(a: Addon, since: number) {
    const known = new Set((await this.backups(a)).map((b) => b.id as string));
    let found: Record<string, any> | undefined;
    await waitUntil(
      "a new full backup",
      LONG_MS,
      async () => {
        found = (await this.backups(a)).find((b) => !known.has(b.id) && b.type === "full");
        return found !== undefined;
      },
      200,
    );
    const listedMs = performance.now() - since;
    return {
      label: found!.id as string,
      listedMs,
      pgbackrestMs: Date.parse(found!.ended_at) - Date.parse(found!.started_at),
      size: Number(found!.size),
    };
  }

  async waitVerified(a: Addon, label: string): Promise<{ ms: number; detail: string }> {
    const t0 = performance.now();
    let b: Record<string, any> | undefined;
    await waitUntil(
      "the backup's verification",
      LONG_MS,
      async () => {
        b = (await this.backups(a)).find((x) => x.id === label);
        return b !== undefined && b.verification_status !== "pending";
      },
      500,
    );
    if (b!.verification_status !== "verified")
      throw new Error(`verification failed: ${b!.verification_detail}`);
    return { ms: performance.now() - t0, detail: b!.verification_detail as string };
  }

  /** A fork of `src` at `t` in an app of its own: POST -> running. */
  async fork(src: Addon, t: Date, plan: string): Promise<{ addon: Addon; ms: number }> {
    const app = `${src.app}-fork`;
    if ((await this.c.api("GET", `/v1/apps/${app}`)).status === 404) {
      await this.c.api("POST", "/v1/apps", { app: { name: app } });
    }
    const t0 = performance.now();
    const res = await this.c.api("POST", `/v1/apps/${app}/addons`, {
      addon: {
        addon_provider_id: "postgresql",
        plan_id: plan,
        restore_from: { database_id: src.id, restore_time: t.toISOString() },
      },
    });
    if (res.status !== 201) throw new Error(`fork: ${res.status} ${JSON.stringify(res.json)}`);
    const id = res.json.addon.id as string;
    await waitUntil(
      "the fork to run",
      LONG_MS,
      async () => {
        const s = (await this.c.api("GET", `/v1/apps/${app}/addons/${id}`)).json.addon.status;
        return s === "running";
      },
      200,
    );
    const ms = performance.now() - t0;
    const vars = (await this.c.api("GET", `/v1/apps/${app}/variables`)).json.variables as any[];
    const url = vars.find((v) => v.name === "SCALINGO_POSTGRESQL_URL").value as string;
    return { addon: { app, id, url, dbname: new URL(url).pathname.slice(1) }, ms };
  }

  async remove(a: Addon): Promise<void> {
    await deleteAddons(this.c, [{ app: a.app, addonId: a.id }], 300_000);
  }

  async nodeDirOf(a: Addon): Promise<string> {
    const { rows } = await this.c.controller.deps.db.query(
      "SELECT id FROM instances WHERE database_id = $1 AND kind = 'node' AND desired_state <> 'deleted'",
      [a.id],
    );
    return path.join(this.c.stateDirOf(this.host), "instances", rows[0].id);
  }

  configFileOfDir(nodeDir: string): string {
    return path.join(nodeDir, "backup", "pgbackrest.conf");
  }
}
