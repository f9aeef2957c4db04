// The floor of provisioning: what a plain script does to get a TLS-verified PostgreSQL on
// this machine, with no platform around it. Deliberately lean (so the floor is strict):
// initdb -N, one openssl call for the server certificate, a few config lines, pg_ctl start,
// one verify-full connection as the superuser initdb created (no extra role or database).
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import pg from "pg";

const run = promisify(execFile);
const BIN = "/usr/lib/postgresql/15/bin";
const PASSWORD = "floor-password-floor-password-floor-password-floor-password-0123";

export interface FloorRun {
  totalMs: number;
  steps: Record<string, number>;
}

export class Floor {
  private readonly uid: number;
  private readonly gid: number;
  readonly caPem: Promise<string>;

  /** `dir` must be traversable by the postgres user. */
  constructor(
    private readonly dir: string,
    private readonly address: string,
  ) {
    const user = os.userInfo().uid === 0 ? lookup("postgres") : null;
    this.uid = user?.uid ?? os.userInfo().uid;
    this.gid = user?.gid ?? os.userInfo().gid;
    this.caPem = this.makeCa();
  }

  private async makeCa(): Promise<string> {
    const ca = path.join(this.dir, "ca");
    await fs.mkdir(ca, { recursive: true, mode: 0o700 });
    await run("openssl", [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
      ...["-keyout", path.join(ca, "ca.key"), "-out", path.join(ca, "ca.crt"), "-days", "30"],
      ...["-subj", "/CN=floor-ca", "-addext", "basicConstraints=critical,CA:TRUE"],
      ...["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
    ]);
    return fs.readFile(path.join(ca, "ca.crt"), "utf8");
  }

  private asPostgres(bin: string, args: string[]) {
    // uid/gid instead of runuser: the leanest way, as Cellar's agent does it too.
    return run(path.join(BIN, bin), args, { uid: this.uid, gid: this.gid, cwd: "/" });
  }

  /** One provisioning from nothing to a first TLS query; returns its timings and leaves it running. */
  async once(i: number, port: number): Promise<FloorRun> {
    const caPem = await this.caPem;
    const base = path.join(this.dir, `db${i}`);
    const data = path.join(base, "pgdata");
    const steps: Record<string, number> = {};
    const t0 = performance.now();
    let t = t0;
    const lap = (name: string) => {
      const now = performance.now();
      steps[name] = now - t;
      t = now;
    };

    await fs.mkdir(path.join(base, "run"), { recursive: true, mode: 0o700 });
    await fs.writeFile(path.join(base, "pw"), PASSWORD, { mode: 0o600 });
    for (const p of [base, path.join(base, "run"), path.join(base, "pw")])
      await fs.chown(p, this.uid, this.gid);
    await this.asPostgres("initdb", [
      ...["-D", data, "-U", "postgres", `--pwfile=${path.join(base, "pw")}`],
      ...["--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "-N"],
    ]);
    lap("initdb");

    const key = path.join(data, "server.key");
    await run("openssl", [
      ...[
        "req",
        "-x509",
        "-CA",
        path.join(this.dir, "ca", "ca.crt"),
        "-CAkey",
        path.join(this.dir, "ca", "ca.key"),
      ],
      ...["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30"],
      ...["-keyout", key, "-out", path.join(data, "server.crt"), "-subj", `/CN=floor-${i}`],
      ...["-addext", `subjectAltName=IP:${this.address}`, "-addext", "basicConstraints=CA:FALSE"],
    ]);
    for (const f of ["server.key", "server.crt"]) await fs.chown(path.join(data, f), this.uid, this.gid);
    await fs.chmod(key, 0o600);
    const conf = [
      `listen_addresses = '${this.address}'`,
      `port = ${port}`,
      `unix_socket_directories = '${path.join(base, "run")}'`,
      "ssl = on",
      "ssl_min_protocol_version = 'TLSv1.3'",
      "",
    ].join("\n");
    await fs.appendFile(path.join(data, "postgresql.conf"), conf);
    await fs.writeFile(
      path.join(data, "pg_hba.conf"),
      "local all postgres trust\nhostssl all all 127.0.0.0/8 scram-sha-256\n",
    );
    lap("tls+config");

    await this.asPostgres("pg_ctl", ["start", "-w", "-s", "-D", data, "-l", path.join(base, "log")]);
    lap("start");

    const client = new pg.Client({
      host: this.address,
      port,
      user: "postgres",
      password: PASSWORD,
      database: "postgres",
      ssl: { ca: caPem, rejectUnauthorized: true },
    });
    await client.connect();
    try {
      await client.query("SELECT 1");
    } finally {
      await client.end();
    }
    lap("connect+query");
    return { totalMs: performance.now() - t0, steps };
  }

  /** Stops and removes one instance (not timed). */
  async remove(i: number): Promise<void> {
    const base = path.join(this.dir, `db${i}`);
    await this.asPostgres("pg_ctl", [
      "stop",
      "-w",
      "-s",
      "-m",
      "immediate",
      "-D",
      path.join(base, "pgdata"),
    ]).catch(() => undefined);
    await fs.rm(base, { recursive: true, force: true });
  }
}

function lookup(name: string): { uid: number; gid: number } {
  // /etc/passwd: name:x:uid:gid:...
  const line = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((l) => l.startsWith(`${name}:`));
  if (!line) throw new Error(`no ${name} OS user: install postgresql-15 (scripts/setup.sh)`);
  const [, , uid, gid] = line.split(":");
  return { uid: Number(uid), gid: Number(gid) };
}
