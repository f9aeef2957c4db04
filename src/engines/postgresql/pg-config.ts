// Rendering of an instance's configuration files. Pure: the instance writes them.
import type { ArchiveSettings } from "./backup/pgbackrest-config.ts";
import type { PlanSettings } from "./plan-settings.ts";

export interface InstanceConfigInput {
  settings: PlanSettings;
  listenAddress: string;
  port: number;
  socketDir: string;
  logDir: string;
  tls: { certFile: string; keyFile: string; caFile: string };
  /** Shown in process titles (`postgres: inst-xxx: checkpointer`), so ps names the instance. */
  clusterName: string;
  /** Continuous archiving (backup/pgbackrest-config.ts); absent: no archiving. */
  archive?: ArchiveSettings | undefined;
}

/** Quotes a value as a postgresql.conf string literal. */
export function confString(value: string): string {
  return `'${value.replace(/\\/g, "\\\\").replace(/'/g, "''")}'`;
}

/** Every setting Cellar owns, in file order. */
export function postgresConfEntries(input: InstanceConfigInput): Array<[string, string]> {
  const s = input.settings;
  return [
    ["listen_addresses", confString(input.listenAddress)],
    ["port", String(input.port)],
    ["unix_socket_directories", confString(input.socketDir)],
    // The socket only serves the superuser (trust): only its owner (and root) may reach it.
    ["unix_socket_permissions", "0700"],
    ["cluster_name", confString(input.clusterName)],
    ["max_connections", String(s.maxConnections)],
    ["superuser_reserved_connections", String(s.superuserReservedConnections)],
    ["shared_buffers", confString(`${s.sharedBuffersMb}MB`)],
    ["effective_cache_size", confString(`${s.effectiveCacheSizeMb}MB`)],
    ["work_mem", confString(`${s.workMemKb}kB`)],
    ["maintenance_work_mem", confString(`${s.maintenanceWorkMemMb}MB`)],
    ["autovacuum_naptime", confString(`${s.autovacuumNaptimeS}s`)],
    ["password_encryption", confString("scram-sha-256")],
    ["ssl", "on"],
    ["ssl_min_protocol_version", confString("TLSv1.3")],
    ["ssl_cert_file", confString(input.tls.certFile)],
    ["ssl_key_file", confString(input.tls.keyFile)],
    // Lets hba lines demand client certificates (replication, later); clients without one still connect.
    ["ssl_ca_file", confString(input.tls.caFile)],
    // The collector rotates by size without a restart or an external logrotate (none on these
    // hosts) and names the current file in pgdata/current_logfiles; 50 MB is the reference's
    // hot-log size. Output before the collector starts (bind errors) goes to pg_ctl's -l file.
    ["log_destination", confString("stderr")],
    ["logging_collector", "on"],
    ["log_directory", confString(input.logDir)],
    ["log_filename", confString("postgresql-%Y-%m-%d_%H%M%S.log")],
    ["log_file_mode", "0600"],
    ["log_rotation_size", confString("50MB")],
    ["log_rotation_age", "0"],
    ["log_line_prefix", confString("%m [%p] %q%u@%d ")],
    ["log_timezone", confString("UTC")],
    ...archiveEntries(input.archive),
  ];
}

function archiveEntries(archive: ArchiveSettings | undefined): Array<[string, string]> {
  if (!archive) return [];
  return [
    ["archive_mode", "on"],
    ["archive_command", confString(archive.command)],
    ["archive_timeout", confString(`${archive.timeoutS}s`)],
  ];
}

export function renderCellarConf(input: InstanceConfigInput): string {
  const lines = postgresConfEntries(input).map(([k, v]) => `${k} = ${v}`);
  return `# Written by Cellar from the instance's plan; edits are overwritten.\n${lines.join("\n")}\n`;
}

export interface HbaOptions {
  /** Force TLS: drop the plain `host` lines so non-TLS connections find no entry and are refused. */
  forceTls: boolean;
}

/** pg_hba.conf: first match wins. */
export function renderPgHba(opts: HbaOptions): string {
  const lines = [
    "# Written by Cellar; edits are overwritten.",
    "# TYPE   DATABASE USER     ADDRESS    METHOD",
    // The socket directory is 0700 and owned by the postgres OS user: only it and root reach it.
    "local    all      postgres            trust",
    // The superuser has no password and must never be reachable over the network.
    "host     all      postgres 0.0.0.0/0  reject",
    "host     all      postgres ::/0       reject",
    "hostssl  all      all      0.0.0.0/0  scram-sha-256",
    "hostssl  all      all      ::/0       scram-sha-256",
  ];
  if (!opts.forceTls) {
    // sslmode=prefer clients that cannot do TLS.
    lines.push("host     all      all      0.0.0.0/0  scram-sha-256");
    lines.push("host     all      all      ::/0       scram-sha-256");
  }
  return `${lines.join("\n")}\n`;
}
