// Patroni's configuration for one node of an HA cluster. Pure. Patroni reads YAML, of which
// JSON is a subset, so the file is written with JSON.stringify: no YAML quoting pitfalls.
import { postgresConfEntries, renderPgHba, type InstanceConfigInput } from "./pg-config.ts";

/** What an HA node needs beyond a single node's spec. */
export interface HaSpec {
  /** The cluster's name in the DCS (the database id); its keys live under namespace + scope. */
  scope: string;
  namespace: string;
  /** This member's name (the instance id). */
  member: string;
  restPort: number;
  restPassword: string;
  dcs: { endpoints: string[]; user: string; password: string; certPem: string; keyPem: string };
  /** The replication role's password and client certificate (CN = the role). */
  replication: { password: string; certPem: string; keyPem: string };
  rewindPassword: string;
  /** Enterprise: a commit is acknowledged only once a standby has it. */
  synchronous: boolean;
  timing: HaTiming;
  /** The agent hands a dead node's leader key back at once (false: the TTL decides, as stock Patroni). */
  releaseLeaderOnLoss: boolean;
  /**
   * A standby added to a Starter's node: it must never bootstrap a cluster of its own
   * (Patroni without a bootstrap section waits for a leader, then clones it).
   */
  joinOnly?: boolean;
  /**
   * A Starter's node Patroni takes over: the cluster starts asynchronous (a strict leader
   * alone would accept no commit); its standbys turn synchronous mode on once they stream.
   */
  adopted?: boolean;
}

export interface HaTiming {
  ttl: number;
  loopWait: number;
  retryTimeout: number;
}

/**
 * Cellar's timing: a lost leader is detected in at most ttl seconds (the agent of a node
 * whose Patroni died hands the leader key back at once, see ha-node.ts). Patroni's rule
 * loop_wait + 2 × retry_timeout ≤ ttl holds.
 */
export const CELLAR_HA_TIMING: HaTiming = { ttl: 10, loopWait: 1, retryTimeout: 4 };
/** Patroni's own defaults, for the failover benchmark's baseline. */
export const PATRONI_DEFAULT_TIMING: HaTiming = { ttl: 30, loopWait: 10, retryTimeout: 10 };

export const REPLICATION_USER = "cellar_replication";
export const REWIND_USER = "cellar_rewind";
export const REST_USER = "cellar";
/** A standby further behind than this never becomes the leader (Business, asynchronous). */
export const MAXIMUM_LAG_ON_FAILOVER_BYTES = 1024 * 1024;

export interface PatroniFiles {
  dataDir: string;
  binDir: string;
  pgpass: string;
  serverCert: string;
  serverKey: string;
  caFile: string;
  replicationCert: string;
  replicationKey: string;
  dcsCert: string;
  dcsKey: string;
}

/** Settings that must be equal on every member: Patroni keeps them in the DCS. */
const GLOBAL_SETTINGS = new Set(["max_connections", "max_wal_senders", "max_replication_slots", "wal_level"]);
/** Settings Patroni sets itself from its own sections. */
const PATRONI_OWNED = new Set(["listen_addresses", "port", "cluster_name"]);

export function renderPatroniConfig(
  ha: HaSpec,
  input: InstanceConfigInput,
  files: PatroniFiles,
  opts: { forceTls: boolean },
): string {
  const local: Record<string, string | number> = {};
  const global: Record<string, string | number> = {
    wal_level: "replica",
    hot_standby: "on",
    // pg_rewind needs hint bits WAL-logged (no data checksums on these clusters).
    wal_log_hints: "on",
    max_wal_senders: 10,
    max_replication_slots: 10,
    wal_keep_size: "256MB",
    // A standby whose stream has ended sleeps this long before it looks for WAL again, and
    // PostgreSQL 15 finishes that sleep even when a promotion arrives during it: with the
    // default (5 s) a switchover's candidate sometimes promoted 4-5 s late.
    wal_retrieve_retry_interval: "200ms",
  };
  for (const [key, raw] of postgresConfEntries(input)) {
    if (PATRONI_OWNED.has(key)) continue;
    const value = raw.startsWith("'") ? raw.slice(1, -1).replace(/''/g, "'") : raw;
    (GLOBAL_SETTINGS.has(key) ? global : local)[key] = value;
  }
  // archive_mode=on on every member: only the leader archives (pgBackRest refuses backups of
  // a server with `always`); a new leader's agent pushes the segments it streamed and the old
  // leader may not have archived (node-backups.ts), so a failover leaves no gap.
  // A node in a network namespace listens on its link to the host and on its database's
  // network (last): its peers and the gateways dial it there. Its namespace is its own, so
  // the REST API may listen on all of its addresses (Patroni takes one listen address).
  const addresses = input.listenAddress.split(",");
  const connect = addresses.at(-1)!;
  const restListen = addresses.length > 1 ? "0.0.0.0" : connect;
  const tlsClient = { sslmode: "verify-full", sslrootcert: files.caFile };
  const config = {
    scope: ha.scope,
    namespace: ha.namespace,
    name: ha.member,
    log: { level: "INFO" },
    restapi: {
      listen: `${restListen}:${ha.restPort}`,
      connect_address: `${connect}:${ha.restPort}`,
      certfile: files.serverCert,
      keyfile: files.serverKey,
      cafile: files.caFile,
      // Unsafe calls (switchover, restart, reinitialise) need the password; reads do not.
      authentication: { username: REST_USER, password: ha.restPassword },
    },
    ctl: { insecure: false, cacert: files.caFile },
    etcd3: {
      hosts: ha.dcs.endpoints.map((e) => e.replace(/^https:\/\//, "")),
      protocol: "https",
      cacert: files.caFile,
      cert: files.dcsCert,
      key: files.dcsKey,
      username: ha.dcs.user,
      password: ha.dcs.password,
      // The hosts given are the ones this node can reach: no discovery of the members'
      // advertised addresses (a node in a namespace cannot reach those).
      use_proxies: true,
    },
    ...(ha.joinOnly ? {} : { bootstrap: bootstrapSection(ha, global) }),
    postgresql: {
      // Patroni's own replication connection dials the first one, verifying its name: the
      // certificate names the database network address, not the link's.
      listen: `${[connect, ...addresses.filter((a) => a !== connect)].join(",")}:${input.port}`,
      connect_address: `${connect}:${input.port}`,
      data_dir: files.dataDir,
      bin_dir: files.binDir,
      pgpass: files.pgpass,
      use_unix_socket: true,
      use_unix_socket_repl: false,
      authentication: {
        superuser: { username: "postgres" },
        replication: {
          username: REPLICATION_USER,
          password: ha.replication.password,
          ...tlsClient,
          sslcert: files.replicationCert,
          sslkey: files.replicationKey,
        },
        rewind: { username: REWIND_USER, password: ha.rewindPassword, ...tlsClient },
      },
      parameters: local,
      pg_hba: haPgHba(opts.forceTls),
      basebackup: [{ checkpoint: "fast" }],
    },
    tags: { nofailover: false, noloadbalance: false, clonefrom: false, nosync: false },
  };
  return `${JSON.stringify(config, null, 2)}\n`;
}

/** Patroni's bootstrap: the cluster's dynamic configuration and initdb's options. */
function bootstrapSection(ha: HaSpec, global: Record<string, string | number>) {
  return {
    dcs: {
      ttl: ha.timing.ttl,
      loop_wait: ha.timing.loopWait,
      retry_timeout: ha.timing.retryTimeout,
      maximum_lag_on_failover: MAXIMUM_LAG_ON_FAILOVER_BYTES,
      // A member on an older timeline than the cluster's never leads: an old leader cut off
      // and back (still on its timeline, not yet rewound) would otherwise win the race when
      // the new leader's key lapses, and the new timeline's acknowledged writes would be lost
      // (seen once in the network-cut e2e under a loaded machine).
      check_timeline: true,
      synchronous_mode: ha.synchronous && ha.adopted !== true,
      // Enterprise never acknowledges a commit that only the primary has, even alone.
      synchronous_mode_strict: ha.synchronous && ha.adopted !== true,
      postgresql: { use_pg_rewind: true, use_slots: true, parameters: global },
    },
    initdb: [
      { encoding: "UTF8" },
      { locale: "C.UTF-8" },
      { "auth-local": "trust" },
      { "auth-host": "scram-sha-256" },
    ],
  };
}

/**
 * A single node's rules, plus replication: only the replication role, over TLS, with a
 * client certificate naming it. Dedicated HA nodes always force TLS.
 */
function haPgHba(forceTls: boolean): string[] {
  const rules = renderPgHba({ forceTls })
    .split("\n")
    .filter((l) => l.trim() !== "" && !l.startsWith("#"));
  return [
    rules[0]!, // local superuser
    `hostssl  replication ${REPLICATION_USER} 0.0.0.0/0 scram-sha-256 clientcert=verify-full`,
    `hostssl  replication ${REPLICATION_USER} ::/0      scram-sha-256 clientcert=verify-full`,
    // The replication role streams WAL and nothing else: no session in a database.
    `host     all      ${REPLICATION_USER} 0.0.0.0/0 reject`,
    `host     all      ${REPLICATION_USER} ::/0      reject`,
    ...rules.slice(1),
  ];
}
