// One node of an HA cluster: Patroni runs PostgreSQL (bootstrap, replication, promotion,
// rewind) and Cellar runs Patroni, detached, as the postgres OS user, born inside the
// node's sandbox. The PostgresInstance of the same base dir gives the paths and the
// superuser socket (roles, logs).
import https from "node:https";
import tls, { type PeerCertificate } from "node:tls";
import path from "node:path";
import { Daemon } from "../daemon.ts";
import { ensureDir, postgresUser, writeFileAtomic } from "./command.ts";
import type { PostgresInstance } from "./instance.ts";
import { PG_BIN_DIR } from "./local-cluster.ts";
import { renderPatroniConfig, type HaSpec, type PatroniFiles } from "./patroni-config.ts";
import type { PlanSettings } from "./plan-settings.ts";
import type { ArchiveSettings } from "./backup/pgbackrest-config.ts";
import type { PemPair } from "../tls/pki.ts";

/**
 * Patroni, with one timing of its own changed: in a graceful demote (a switchover) it polls
 * `pg_controldata` for the end of the shutdown before it releases the leader key, once a
 * second in Patroni 3.0 (a module constant, not a setting). Every 0.1 s, the key goes about
 * half a second sooner on average, and writes pause that much less. A Patroni without that
 * constant starts unchanged.
 */
export const PATRONI_ARGV = [
  "/usr/bin/python3",
  "-c",
  [
    "import sys",
    "import patroni.postgresql as pg",
    "from patroni.__main__ import main",
    "if hasattr(pg, 'STOP_POLLING_INTERVAL'): pg.STOP_POLLING_INTERVAL = 0.1",
    "sys.argv[0] = 'patroni'",
    "sys.exit(main())",
  ].join("\n"),
];

/** What Patroni says of its node (GET /patroni). */
export interface PatroniState {
  /** running, starting, stopped, crashed, "creating replica", ... */
  state: string;
  /** "leader" ("master" in Patroni 3.0's answer), or what Patroni says otherwise ("replica"). */
  role: string;
  timeline?: number;
}

export class PatroniNode {
  readonly configFile: string;
  private readonly daemon: Daemon;

  constructor(
    readonly pg: PostgresInstance,
    private readonly ha: HaSpec,
    /** The CA that signed the nodes' certificates (REST API, PostgreSQL). */
    private readonly caPem: string,
    /** Wraps Patroni's argv (sandbox, network namespace); the argv already drops to postgres. */
    private readonly wrap: (argv: string[]) => string[] = (a) => a,
  ) {
    this.configFile = path.join(pg.baseDir, "patroni.json");
    this.daemon = new Daemon({
      what: `patroni of ${pg.opts.id}`,
      pidFile: path.join(pg.baseDir, "patroni.pid"),
      logFile: path.join(pg.baseDir, "patroni.log"),
      marker: this.configFile,
    });
  }

  private files(): PatroniFiles {
    const tls = (f: string) => path.join(this.pg.tlsDir, f);
    return {
      dataDir: this.pg.dataDir,
      binDir: PG_BIN_DIR,
      // Patroni writes it as the postgres OS user: in a directory of its own.
      pgpass: path.join(this.pg.tlsDir, "pgpass"),
      serverCert: tls("server.crt"),
      serverKey: tls("server.key"),
      caFile: tls("ca.crt"),
      replicationCert: tls("replication.crt"),
      replicationKey: tls("replication.key"),
      dcsCert: tls("dcs.crt"),
      dcsKey: tls("dcs.key"),
    };
  }

  /** Writes certificates and configuration; starts Patroni, or has it reload a changed config. */
  async ensure(
    settings: PlanSettings,
    tls: PemPair,
    opts: { forceTls: boolean; archive?: ArchiveSettings | undefined },
  ): Promise<{ started: boolean }> {
    const owner = postgresUser();
    const f = this.files();
    await ensureDir(this.pg.baseDir, 0o755, undefined);
    await ensureDir(this.pg.tlsDir, 0o700, owner);
    await ensureDir(this.pg.logDir, 0o700, owner);
    await ensureDir(this.pg.socketDir, 0o700, owner);
    // Patroni runs initdb (or clones a standby) into it as the postgres OS user.
    await ensureDir(this.pg.dataDir, 0o700, owner);
    const written = [
      await writeFileAtomic(f.serverCert, tls.certPem, 0o644, owner),
      await writeFileAtomic(f.serverKey, tls.keyPem, 0o600, owner),
      await writeFileAtomic(f.caFile, tls.caPem, 0o644, owner),
      await writeFileAtomic(f.replicationCert, this.ha.replication.certPem, 0o644, owner),
      await writeFileAtomic(f.replicationKey, this.ha.replication.keyPem, 0o600, owner),
      await writeFileAtomic(f.dcsCert, this.ha.dcs.certPem, 0o644, owner),
      await writeFileAtomic(f.dcsKey, this.ha.dcs.keyPem, 0o600, owner),
    ];
    const config = renderPatroniConfig(
      this.ha,
      {
        settings,
        listenAddress: this.pg.opts.listenAddress,
        port: this.pg.opts.port,
        socketDir: this.pg.socketDir,
        logDir: this.pg.logDir,
        tls: { certFile: f.serverCert, keyFile: f.serverKey, caFile: f.caFile },
        clusterName: this.pg.opts.id,
        archive: opts.archive,
      },
      f,
      { forceTls: opts.forceTls },
    );
    // The config holds passwords: readable by the postgres OS user only.
    const changed = (await writeFileAtomic(this.configFile, config, 0o600, owner)) || written.some(Boolean);
    const pid = await this.daemon.pid();
    if (pid !== null) {
      if (changed) process.kill(pid, "SIGHUP"); // Patroni re-reads its config on SIGHUP
      return { started: false };
    }
    // --reset-env: HOME becomes the postgres user's, where libpq (pg_rewind's checks, a
    // standby's connections) looks for its files; root's home is not readable to it.
    const user = owner
      ? [`--reuid=${owner.uid}`, `--regid=${owner.gid}`, "--init-groups", "--reset-env"]
      : [];
    // setpriv execs Patroni: the pid spawned is Patroni's own, already unprivileged.
    const argv = [...(owner ? ["setpriv", ...user] : []), ...PATRONI_ARGV, this.configFile];
    await this.daemon.start(this.wrap(argv));
    return { started: true };
  }

  async patroniPid(): Promise<number | null> {
    return this.daemon.pid();
  }

  /** Patroni's view of its node over its REST API (TLS, verified); null when it does not answer. */
  state(timeoutMs = 2000): Promise<PatroniState | null> {
    // In a namespace: dialled on its link to the host (first), named by its database network
    // address (last), which its certificate carries.
    const addresses = this.pg.opts.listenAddress.split(",");
    const url = `https://${addresses[0]}:${this.ha.restPort}/patroni`;
    const named = addresses.at(-1)!;
    const checkServerIdentity = (_host: string, cert: PeerCertificate) =>
      tls.checkServerIdentity(named, cert);
    return new Promise((resolve) => {
      const req = https.get(url, { ca: this.caPem, timeout: timeoutMs, checkServerIdentity }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          try {
            const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>;
            const text = (v: unknown) => (typeof v === "string" ? v : "");
            const role = body.role === "master" || body.role === "primary" ? "leader" : text(body.role);
            const state: PatroniState = { state: text(body.state), role };
            if (typeof body.timeline === "number") state.timeline = body.timeline;
            resolve(state);
          } catch {
            resolve(null);
          }
        });
      });
      req.on("timeout", () => req.destroy());
      req.on("error", () => resolve(null));
    });
  }

  /** Stops Patroni, which stops PostgreSQL; then makes sure no postmaster is left. */
  async stop(): Promise<void> {
    await this.daemon.stop(30_000);
    await this.pg.stop("fast");
  }

  logTail(): Promise<string> {
    return this.daemon.logTail();
  }
}
