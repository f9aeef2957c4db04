// A point-in-time restore in place of an HA cluster. Every node's spec names the restore and
// its `restorer` (the member that led when it was asked). The restorer says so in the DCS
// (a `cellar-restore` key under the cluster's prefix), pauses the cluster, stops its Patroni,
// waits until no other member is registered, restores its data dir as a single node does
// (restore.ts: side dir, swap, promote), wipes the cluster's keys (the last leader's WAL
// position, the pause, the old members) and hands the restored primary to Patroni, which
// registers it as the cluster anew; then it writes the outcome. The other members stop their
// Patroni when they see the key, wait for the outcome, and after a done restore empty their
// data dir: Patroni clones the restored leader. Every step is idempotent: an agent killed
// anywhere converges again into the same sequence. An HA fork's first node is seeded here too.
import fs from "node:fs/promises";
import path from "node:path";
import { EtcdClient, prefixEnd } from "../engines/etcd/etcd-client.ts";
import { DataDirSwap } from "../engines/postgresql/backup/data-swap.ts";
import type { NodeBackupSpec } from "../engines/postgresql/backup/types.ts";
import { ensureDir, postgresUser, writeFileAtomic } from "../engines/postgresql/command.ts";
import type { PostgresInstance } from "../engines/postgresql/instance.ts";
import type { HaSpec } from "../engines/postgresql/patroni-config.ts";
import type { PatroniNode } from "../engines/postgresql/patroni-node.ts";
import { waitFor } from "../engines/postgresql/process-watch.ts";
import type { Logger } from "../log.ts";
import type { NodeSpec } from "../reconciler/instance-spec.ts";
import { restOf } from "./ha-changes.ts";
import type { NodeBackups } from "./node-backups.ts";

type Restore = NonNullable<NodeBackupSpec["restore"]>;

interface Marker {
  id: string;
  stage: "stopping" | "done" | "failed";
  error?: string | null;
}

/** What this node did for restores (beside the node, not in its data dir, which is replaced). */
interface LocalState {
  /** The restore this standby stopped for and waits on. */
  stoppedFor: string | null;
  handled: string[];
}

const MARKER = "cellar-restore";
/** Members of a cluster whose agent is gone keep their key for the DCS TTL (10 s) at most. */
const MEMBERS_GONE_TIMEOUT_MS = 3 * 60_000;
/**
 * A standby's convergence waits this long for the restorer's outcome, then fails and is
 * retried (a large restore takes long; an agent stopping waits for its convergences).
 */
const OUTCOME_WAIT_MS = 60_000;
const KEPT_HANDLED = 20;
/** Files Patroni writes into the data dir: the restored one holds those of the backup's node. */
const PATRONI_FILES = ["postgresql.conf", "postgresql.base.conf", "pg_hba.conf", "pg_ident.conf"];

export interface HaRestoreNode {
  id: string;
  ha: HaSpec;
  caPem: string;
  backup: NodeBackupSpec;
  patroni: PatroniNode;
  /** Stops Patroni and its PostgreSQL, on purpose (no fencing). */
  stopPatroni(): Promise<void>;
  /** Starts Patroni on the node's data dir; resolves once it runs PostgreSQL. */
  startPatroni(): Promise<void>;
}

export class HaRestores {
  /** `<instance>/<restore>` pairs known handled: no DCS look for them. */
  private readonly handled = new Set<string>();
  private readonly stopping = new Set<string>();
  private readonly writes = new Map<string, Promise<void>>();

  constructor(
    private readonly opts: { backups: NodeBackups; dirOf: (id: string) => string; log: Logger | null },
  ) {}

  static pending(backup: NodeBackupSpec | undefined): Restore | null {
    return backup?.restore?.restorer ? backup.restore : null;
  }

  /**
   * Before Patroni starts the node: its part of the restore its spec asks for. Returns once
   * the node may run as usual (a standby not asked to stop yet runs on).
   */
  async ensure(node: HaRestoreNode): Promise<void> {
    const r = HaRestores.pending(node.backup);
    if (!r || (await this.isHandled(node.id, r.id))) return;
    const done = r.restorer === node.ha.member ? await this.lead(node, r) : await this.follow(node, r);
    if (done) await this.markHandled(node.id, r.id);
  }

  /**
   * The heartbeat's look on a standby whose spec names a restore: once the restorer asked,
   * it stops (the next convergence waits for the outcome). Returns whether it stopped.
   */
  async stopIfAsked(node: HaRestoreNode): Promise<boolean> {
    const r = HaRestores.pending(node.backup);
    if (!r || r.restorer === node.ha.member || this.stopping.has(node.id)) return false;
    if (await this.isHandled(node.id, r.id)) return false;
    const marker = await this.marker(node).catch(() => null);
    if (marker?.id !== r.id) return false;
    this.stopping.add(node.id);
    try {
      await this.stopFor(node, r);
    } finally {
      this.stopping.delete(node.id);
    }
    return true;
  }

  private async lead(node: HaRestoreNode, r: Restore): Promise<boolean> {
    const etcd = this.etcd(node);
    const pg = node.patroni.pg;
    const marker = await this.marker(node);
    if (marker?.id === r.id && marker.stage !== "stopping") return true;
    let outcome = await this.opts.backups.restoreOutcome(node.id, r.id);
    if (!outcome) {
      this.opts.log?.info("restoring the HA cluster: the other members stop", {
        inst: node.id,
        restore: r.id,
      });
      await etcd.put(
        this.key(node, MARKER),
        JSON.stringify({ id: r.id, stage: "stopping" } satisfies Marker),
      );
      // Paused, no member promotes while the leader's Patroni is stopped.
      await restOf(pg, node.ha, node.caPem)
        .patchConfig({ pause: true })
        .catch((err: Error) => this.opts.log?.warn("cannot pause the cluster", { err: err.message }));
      await node.stopPatroni();
      const gone = await this.othersGone(node);
      outcome = gone
        ? await this.opts.backups.restoreHa(node.id, pg, node.backup, () => keepOwnConfig(pg))
        : await this.opts.backups.refuseRestore(node.id, node.backup, OTHERS_LEFT);
    }
    // Done or not, the cluster starts again from this node's data dir (restored or as it was).
    const state = await node.patroni.state();
    if (state?.role !== "leader") {
      // Why: with a member still running, its keys stay; only the pause goes.
      if (outcome?.error === OTHERS_LEFT) await this.unpause(node);
      else await etcd.deletePrefix(this.key(node, ""));
      await node.startPatroni();
      await waitFor(
        `patroni of ${node.id} to lead the restored cluster`,
        async () => (await node.patroni.state())?.role === "leader",
        120_000,
        250,
      );
    }
    const stage = outcome?.status === "done" ? "done" : "failed";
    await etcd.put(
      this.key(node, MARKER),
      JSON.stringify({ id: r.id, stage, error: outcome?.error ?? null } satisfies Marker),
    );
    this.opts.log?.info("HA cluster restore over", { inst: node.id, restore: r.id, stage });
    return true;
  }

  /** A standby: runs on until asked; once stopped, waits for the outcome, then clones or rejoins. */
  private async follow(node: HaRestoreNode, r: Restore): Promise<boolean> {
    const local = await this.readLocal(node.id);
    let marker = await this.marker(node);
    if (local.stoppedFor !== r.id && marker?.id !== r.id) return false;
    if (local.stoppedFor !== r.id) await this.stopFor(node, r);
    await waitFor(
      `the restore ${r.id} of the cluster's leader`,
      async () => {
        marker = await this.marker(node).catch(() => null);
        return marker?.id === r.id && marker.stage !== "stopping";
      },
      OUTCOME_WAIT_MS,
      1000,
    );
    if (marker?.stage === "done") {
      // Its data is ahead of the restored leader's on an abandoned timeline: cloned afresh.
      this.opts.log?.info("standby cloned again from the restored leader", { inst: node.id, restore: r.id });
      await emptyDir(node.patroni.pg.dataDir);
    }
    return true;
  }

  private async stopFor(node: HaRestoreNode, r: Restore): Promise<void> {
    await node.stopPatroni();
    const local = await this.readLocal(node.id);
    await this.saveLocal(node.id, { ...local, stoppedFor: r.id });
  }

  /** True once no other member is registered; false when one stays past the timeout. */
  private async othersGone(node: HaRestoreNode): Promise<boolean> {
    const prefix = this.key(node, "members/");
    const etcd = this.etcd(node);
    return waitFor(
      "the other members of the cluster to stop",
      async () => {
        const res = await etcd.call<{ kvs?: Array<{ key?: string }> }>("/v3/kv/range", {
          key: Buffer.from(prefix).toString("base64"),
          range_end: prefixEnd(prefix),
          keys_only: true,
        });
        const names = (res.kvs ?? []).map((kv) => Buffer.from(kv.key ?? "", "base64").toString("utf8"));
        return names.every((k) => k === `${prefix}${node.ha.member}`);
      },
      MEMBERS_GONE_TIMEOUT_MS,
      500,
    ).then(
      () => true,
      () => false,
    );
  }

  /** The cluster's dynamic configuration without the pause (set in the DCS directly: no Patroni runs). */
  private async unpause(node: HaRestoreNode): Promise<void> {
    const etcd = this.etcd(node);
    const raw = await etcd.get(this.key(node, "config"));
    if (!raw) return;
    const config = JSON.parse(raw) as Record<string, unknown>;
    delete config.pause;
    await etcd.put(this.key(node, "config"), JSON.stringify(config));
  }

  private etcd(node: HaRestoreNode): EtcdClient {
    const { dcs } = node.ha;
    return new EtcdClient({
      endpoints: dcs.endpoints,
      tls: { caPem: node.caPem, certPem: dcs.certPem, keyPem: dcs.keyPem },
      auth: { user: dcs.user, password: dcs.password },
    });
  }

  private key(node: HaRestoreNode, rest: string): string {
    return `${node.ha.namespace}${node.ha.scope}/${rest}`;
  }

  private async marker(node: HaRestoreNode): Promise<Marker | null> {
    const raw = await this.etcd(node).get(this.key(node, MARKER));
    if (!raw) return null;
    const m = JSON.parse(raw) as Partial<Marker>;
    return typeof m.id === "string" && typeof m.stage === "string" ? (m as Marker) : null;
  }

  private stateFile(id: string): string {
    return path.join(this.opts.dirOf(id), "ha-restore.json");
  }

  private async readLocal(id: string): Promise<LocalState> {
    const text = await fs.readFile(this.stateFile(id), "utf8").catch(() => null);
    return text ? (JSON.parse(text) as LocalState) : { stoppedFor: null, handled: [] };
  }

  private async saveLocal(id: string, state: LocalState): Promise<void> {
    // Why: the heartbeat's stop and a convergence may write at once (one temporary file name).
    const previous = this.writes.get(id) ?? Promise.resolve();
    const write = previous.then(() =>
      writeFileAtomic(this.stateFile(id), JSON.stringify(state), 0o600, undefined).then(() => undefined),
    );
    this.writes.set(
      id,
      write.catch(() => undefined),
    );
    await write;
  }

  private async isHandled(id: string, restoreId: string): Promise<boolean> {
    if (this.handled.has(`${id}/${restoreId}`)) return true;
    const known = (await this.readLocal(id)).handled.includes(restoreId);
    if (known) this.handled.add(`${id}/${restoreId}`);
    return known;
  }

  private async markHandled(id: string, restoreId: string): Promise<void> {
    const local = await this.readLocal(id);
    const handled = [...local.handled.filter((h) => h !== restoreId), restoreId].slice(-KEPT_HANDLED);
    await this.saveLocal(id, { stoppedFor: null, handled });
    this.handled.add(`${id}/${restoreId}`);
  }

  forget(id: string): void {
    this.writes.delete(id);
    for (const key of this.handled) if (key.startsWith(`${id}/`)) this.handled.delete(key);
  }
}

/**
 * An HA fork's first node, before Patroni ever ran it: made and seeded as a single node
 * (node-backups.ts, seed.ts) and started; Patroni then adopts it as for Starter -> Business
 * (ha-changes.ts handOverToPatroni), and the other nodes clone it.
 */
export async function seedForkNode(
  id: string,
  pg: PostgresInstance,
  spec: NodeSpec,
  backups: NodeBackups,
  patroniRan: boolean,
): Promise<void> {
  const seed = spec.backup?.seed;
  // Patroni's data dir (its base config) or a running Patroni: the seed is behind it.
  if (!seed || patroniRan || (await exists(path.join(pg.dataDir, "postgresql.base.conf")))) return;
  await pg.ensureInitialised();
  const owner = postgresUser();
  await ensureDir(pg.tlsDir, 0o700, owner);
  await writeFileAtomic(path.join(pg.tlsDir, "server.crt"), spec.tls.certPem, 0o644, owner);
  await writeFileAtomic(path.join(pg.tlsDir, "server.key"), spec.tls.keyPem, 0o600, owner);
  await writeFileAtomic(path.join(pg.tlsDir, "ca.crt"), spec.tls.caPem, 0o644, owner);
  const archive = backups.archiveOf(id, spec.backup);
  const configure = () => pg.configure(spec.settings, { forceTls: spec.forceTls, archive });
  await configure();
  await backups.beforeStart(id, pg, spec.backup, configure);
  await pg.start();
}

const exists = (p: string) =>
  fs.access(p).then(
    () => true,
    () => false,
  );

const OTHERS_LEFT = "another member of the cluster kept running: nothing was restored";

/**
 * The restored data dir holds the configuration Patroni wrote on the node that took the
 * backup (its addresses, its archive command): this node's own files, kept aside with its
 * original data until the restore succeeds, take their place. It starts as a primary.
 */
async function keepOwnConfig(pg: PostgresInstance): Promise<void> {
  const aside = new DataDirSwap(pg, { reconfigure: () => Promise.resolve() }).aside;
  const owner = postgresUser();
  for (const name of PATRONI_FILES) {
    const from = path.join(aside, name);
    const to = path.join(pg.dataDir, name);
    const copied = await fs.copyFile(from, to).then(
      () => true,
      () => false,
    );
    if (copied && owner) await fs.chown(to, owner.uid, owner.gid);
  }
  await fs.rm(path.join(pg.dataDir, "standby.signal"), { force: true });
}

/** Removes what a data dir holds, not the dir itself (a Dedicated node's may be a mount). */
async function emptyDir(dir: string): Promise<void> {
  for (const name of await fs.readdir(dir).catch(() => [] as string[])) {
    await fs.rm(path.join(dir, name), { recursive: true, force: true });
  }
}
