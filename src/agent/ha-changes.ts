// The agent's part in changing an HA cluster (ha-nodes.ts calls these): a Starter's node
// handed to Patroni with its data dir, a node given back its own PostgreSQL, new settings
// applied to a standby (restart, cluster-wide max_connections), and a planned switchover.
import fs from "node:fs/promises";
import path from "node:path";
import { postgresUser, writeFileAtomic } from "../engines/postgresql/command.ts";
import type { PostgresInstance } from "../engines/postgresql/instance.ts";
import { REPLICATION_USER, REWIND_USER, type HaSpec } from "../engines/postgresql/patroni-config.ts";
import { PatroniRest, type PatroniDetails } from "../engines/postgresql/patroni-rest.ts";
import { waitFor } from "../engines/postgresql/process-watch.ts";
import { queryOnce } from "../engines/postgresql/superuser.ts";
import type { PlanSettings } from "../engines/postgresql/plan-settings.ts";
import type { Logger } from "../log.ts";

const CELLAR_INCLUDE = "include 'cellar.conf'";
/** In a node's base dir while a data dir handed to Patroni lacks the cluster's roles. */
const ROLES_PENDING = "cluster-roles.pending";
/** Kept in the cluster's dynamic configuration: the spec generation that last set it. */
const GENERATION_KEY = "cellar_generation";
/** A restarted standby catches up with its leader within this (a small Shared database). */
const STREAMING_TIMEOUT_MS = 60_000;

const exists = (p: string) =>
  fs.access(p).then(
    () => true,
    () => false,
  );

export const restOf = (pg: PostgresInstance, ha: HaSpec, caPem: string) =>
  new PatroniRest(pg.opts.listenAddress, ha, caPem);

/**
 * Starter -> Business: a node whose data dir is run by the agent itself gets the roles the
 * cluster needs (Patroni makes them only when it bootstraps) and loses its single-node
 * settings file (archiving into its pgBackRest stanza must not follow the data dir into the
 * cluster). PostgreSQL keeps running: Patroni adopts the running primary, registers its
 * system identifier (the DCS has no cluster yet) and takes the leader key. Returns whether
 * it did so; the caller restarts the leader once for the settings only a start applies.
 */
export async function handOverToPatroni(
  pg: PostgresInstance,
  ha: HaSpec,
  log: Logger | null,
): Promise<boolean> {
  const mainConf = path.join(pg.dataDir, "postgresql.conf");
  if (await exists(path.join(pg.dataDir, "postgresql.base.conf"))) return false;
  const main = await fs.readFile(mainConf, "utf8").catch(() => null);
  if (main === null || !main.includes(CELLAR_INCLUDE)) return false;
  log?.info("handing the node's data dir to Patroni", { inst: pg.opts.id });
  // Kept until the roles exist: a killed agent makes them at its next converge.
  await fs.writeFile(path.join(pg.baseDir, ROLES_PENDING), "");
  // Patroni checks a starting member over a replication connection to itself.
  if (await pg.isReady()) await ensureClusterRoles(pg, ha);
  const kept = main
    .split("\n")
    .filter((l) => l.trim() !== CELLAR_INCLUDE)
    .join("\n");
  await writeFileAtomic(mainConf, kept, 0o600, postgresUser());
  await fs.rm(path.join(pg.dataDir, "cellar.conf"), { force: true });
  return true;
}

/**
 * Business -> Starter: the cluster is paused (Patroni then leaves PostgreSQL running when it
 * exits), Patroni is stopped, and its files that would turn the data dir into a standby go.
 * The agent's single-node convergence then adopts the running server: no downtime.
 * Without the pause (Patroni not answering), stopping Patroni stops PostgreSQL: a restart.
 */
export async function takeBackFromPatroni(
  pg: PostgresInstance,
  rest: PatroniRest,
  stopPatroni: () => Promise<void>,
  log: Logger | null,
): Promise<void> {
  const paused = await rest
    .patchConfig({ pause: true })
    .then(() =>
      waitFor(
        "patroni to pause",
        async () => (await rest.call("GET", "/patroni", undefined, 2000)).body.includes('"pause": true'),
        15_000,
        200,
      ),
    )
    .then(
      () => true,
      (err: Error) => {
        log?.warn("patroni could not be paused: PostgreSQL restarts without it", {
          inst: pg.opts.id,
          err: err.message,
        });
        return false;
      },
    );
  await stopPatroni();
  // Patroni's postgresql.conf stays (the server runs with it; removing its recovery settings
  // would need a restart); the single node's include, appended to it, overrides the rest.
  for (const f of ["patroni.dynamic.json", "standby.signal", "recovery.signal"]) {
    await fs.rm(path.join(pg.dataDir, f), { force: true });
  }
  log?.info("node runs without patroni again", { inst: pg.opts.id, paused });
}

/**
 * The cluster roles of a data dir handed to Patroni, once it leads. Only then: on a new
 * cluster Patroni creates them after its first start (post_bootstrap), and a role made
 * by anyone else meanwhile fails its bootstrap ("already exists").
 */
export async function ensureAdoptedClusterRoles(pg: PostgresInstance, ha: HaSpec): Promise<void> {
  const marker = path.join(pg.baseDir, ROLES_PENDING);
  if (!(await exists(marker))) return;
  await ensureClusterRoles(pg, ha);
  await fs.rm(marker, { force: true });
}

/**
 * The replication and rewind roles a cluster needs. Patroni makes them when it bootstraps;
 * a data dir it took over (a former Starter) has none. Run on the leader; idempotent.
 */
export async function ensureClusterRoles(pg: PostgresInstance, ha: HaSpec): Promise<void> {
  const sql = `DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${REPLICATION_USER}') THEN
      CREATE ROLE ${REPLICATION_USER} WITH LOGIN REPLICATION;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${REWIND_USER}') THEN
      CREATE ROLE ${REWIND_USER} WITH LOGIN;
    END IF;
  END $$`;
  await queryOnce(pg.superuserConfig(), sql);
  // Passwords are not identifiers: set through a literal quoted by format().
  for (const [role, password] of [
    [REPLICATION_USER, ha.replication.password],
    [REWIND_USER, ha.rewindPassword],
  ] as const) {
    const [row] = await queryOnce<{ stmt: string }>(
      pg.superuserConfig(),
      "SELECT format('ALTER ROLE %I WITH PASSWORD %L', $1::text, $2::text) AS stmt",
      [role, password],
    );
    await queryOnce(pg.superuserConfig(), row!.stmt);
  }
  // What pg_rewind reads on the source (PostgreSQL 11+), as Patroni grants it.
  for (const fn of [
    "pg_ls_dir(text, boolean, boolean)",
    "pg_stat_file(text, boolean)",
    "pg_read_binary_file(text)",
    "pg_read_binary_file(text, bigint, bigint, boolean)",
  ]) {
    await queryOnce(pg.superuserConfig(), `GRANT EXECUTE ON FUNCTION pg_catalog.${fn} TO ${REWIND_USER}`);
  }
}

/**
 * New plan settings on a running member. max_connections is cluster-wide (Patroni keeps it
 * in the DCS and ignores a local value): it is patched there. A standby then restarts with
 * the new settings and is streaming again before this returns. Patroni starts a standby with
 * the primary's max_connections when that is higher (PostgreSQL refuses a lower one on a hot
 * standby), so a smaller value takes effect when the leader itself restarts.
 * A leader is never restarted here: the controller switches over first.
 */
export async function applySettings(
  pg: PostgresInstance,
  rest: PatroniRest,
  settings: PlanSettings,
  generation: number,
  log: Logger | null,
): Promise<void> {
  const config = await rest.config();
  const params = ((config.postgresql as Record<string, unknown> | undefined)?.parameters ?? {}) as Record<
    string,
    unknown
  >;
  // Why: a member still on the previous generation (the leader during a roll, converged
  // again after a restart) must not put the previous value back.
  const newer = generation >= Number(config[GENERATION_KEY] ?? 0);
  if (newer && Number(params.max_connections) !== settings.maxConnections) {
    log?.info("cluster max_connections changed", {
      inst: pg.opts.id,
      to: settings.maxConnections,
      generation,
    });
    await rest.patchConfig({
      postgresql: { parameters: { max_connections: settings.maxConnections } },
      [GENERATION_KEY]: generation,
    });
  }
  // Patroni notices a changed setting at its next loop (a second): wait for its verdict.
  let details: PatroniDetails | null = null;
  await waitFor(
    "patroni to look at the new settings",
    async () => {
      details = await rest.details();
      return details?.state === "running";
    },
    10_000,
    250,
  );
  const role = (details as PatroniDetails | null)?.role;
  const isLeader = role === "master" || role === "primary";
  if (isLeader || !(await needsRestart(pg, rest))) return;
  log?.info("restarting the standby with its new settings", { inst: pg.opts.id });
  await rest.restart();
  await waitFor(
    `standby ${pg.opts.id} to stream from its leader`,
    () => isStreaming(pg),
    STREAMING_TIMEOUT_MS,
    250,
  );
}

/** Restarts the member through Patroni when its server has settings pending a restart. */
export async function restartIfPending(pg: PostgresInstance, rest: PatroniRest, log: Logger | null) {
  if (!(await needsRestart(pg, rest))) return;
  log?.info("restarting the node for settings only a start applies", { inst: pg.opts.id });
  await rest.restart();
}

/** Settings in the files that the running server has not taken (shared_buffers...). */
async function needsRestart(pg: PostgresInstance, rest: PatroniRest): Promise<boolean> {
  // pending_restart is set by Patroni's next loop after a reload: give it that loop.
  for (let i = 0; i < 8; i++) {
    if ((await rest.details())?.pendingRestart) return true;
    const rows = await queryOnce<{ n: number }>(
      pg.superuserConfig(),
      "SELECT count(*)::int AS n FROM pg_settings WHERE pending_restart",
    ).catch(() => [{ n: 0 }]);
    if ((rows[0]?.n ?? 0) > 0) return true;
    await new Promise((r) => setTimeout(r, 250));
  }
  return false;
}

async function isStreaming(pg: PostgresInstance): Promise<boolean> {
  const rows = await queryOnce<{ status: string }>(
    pg.superuserConfig(),
    "SELECT status FROM pg_stat_wal_receiver",
  ).catch(() => []);
  return rows[0]?.status === "streaming";
}

/** How long Patroni's leader takes to act on a changed synchronous mode (a loop or two). */
const SYNC_CHANGE_TIMEOUT_MS = 30_000;

/** The members the leader currently names synchronous standbys. */
async function syncMembers(rest: PatroniRest): Promise<string[]> {
  const res = await rest.call("GET", "/cluster", undefined, 2000);
  if (res.status !== 200) throw new Error(`GET /cluster answered ${res.status}`);
  const members = (JSON.parse(res.body) as { members?: Array<{ name?: string; role?: string }> }).members;
  return (members ?? []).filter((m) => m.role === "sync_standby").map((m) => m.name ?? "");
}

const syncStandbys = async (rest: PatroniRest) => (await syncMembers(rest)).length;

/**
 * Whom to switch over to. Patroni refuses any candidate but a synchronous standby when the
 * cluster is synchronous (Enterprise): the controller's pick is replaced by that standby then
 * (the controller finishes the switchover on whichever standby leads).
 */
export async function switchoverCandidate(
  rest: PatroniRest,
  candidate: string,
  log: Logger | null,
): Promise<string> {
  const sync = await syncMembers(rest).catch(() => [] as string[]);
  if (sync.length === 0 || sync.includes(candidate)) return candidate;
  log?.info("switching over to the synchronous standby instead", { asked: candidate, to: sync[0] });
  return sync[0]!;
}

/**
 * Business <-> Enterprise: the cluster's synchronous mode (in the DCS) follows the spec of
 * the newest generation. Off: patched at once, by any member, and done once the leader names
 * no synchronous standby (Enterprise -> Business removes a standby only after that). On: only
 * by a standby that streams, so a strict leader is never left without a standby to wait for
 * (Starter -> Enterprise, Business -> Enterprise); done once the leader names one.
 */
export async function ensureSynchronousMode(
  pg: PostgresInstance,
  rest: PatroniRest,
  want: boolean,
  generation: number,
  isLeader: boolean,
  log: Logger | null,
): Promise<void> {
  const config = await rest.config();
  const now = config.synchronous_mode === true;
  // Why: a member still on an older generation (re-converged during the change) must not undo it.
  if (now === want || generation < Number(config[GENERATION_KEY] ?? 0)) return;
  if (want && isLeader) return;
  if (want) {
    await waitFor(
      `standby ${pg.opts.id} to stream before synchronous mode`,
      () => isStreaming(pg),
      STREAMING_TIMEOUT_MS,
      250,
    );
  }
  log?.info(want ? "turning synchronous mode on" : "turning synchronous mode off", {
    inst: pg.opts.id,
    generation,
  });
  await rest.patchConfig({
    synchronous_mode: want,
    synchronous_mode_strict: want,
    [GENERATION_KEY]: generation,
  });
  await waitFor(
    want ? "the leader to name a synchronous standby" : "the leader to stop naming synchronous standbys",
    async () => (await syncStandbys(rest)) > 0 === want,
    SYNC_CHANGE_TIMEOUT_MS,
    250,
  );
}
