// One member of a region's etcd cluster (Patroni's DCS), run by the agent of its host:
// TLS with client certificates on both the client and the peer side, data owned by the
// unprivileged `etcd` user. The member set is fixed when the cluster forms; a member that
// already has data ignores the initial-cluster flags, so restarting is always safe.
import fs from "node:fs/promises";
import path from "node:path";
import { ensureDir, writeFileAtomic } from "../postgresql/command.ts";
import type { PemPair } from "../tls/pki.ts";
import { Daemon } from "../daemon.ts";
import { daemonUser } from "../postgresql/command.ts";
import { memberHealthy } from "./etcd-client.ts";

export const ETCD_BIN = "/usr/bin/etcd";
export const ETCD_OS_USER = "etcd";

export interface EtcdMemberSpec {
  name: string;
  clusterToken: string;
  address: string;
  clientPort: number;
  peerPort: number;
  initialCluster: Array<{ name: string; peerUrl: string }>;
  /**
   * Where nodes inside network namespaces dial it (domain/network-rules.ts serviceAddressOf);
   * when it differs from `address`, the member listens there too on hosts that make namespaces.
   */
  serviceAddress?: string;
  /** Serves clients and peers, and is the member's client certificate towards its peers. */
  tls: PemPair;
}

export const clientUrlOf = (s: Pick<EtcdMemberSpec, "address" | "clientPort">) =>
  `https://${s.address}:${s.clientPort}`;
export const peerUrlOf = (s: Pick<EtcdMemberSpec, "address" | "peerPort">) =>
  `https://${s.address}:${s.peerPort}`;

export class EtcdMember {
  private readonly dataDir: string;
  private readonly tlsDir: string;
  private readonly daemon: Daemon;

  constructor(private readonly baseDir: string) {
    this.dataDir = path.join(baseDir, "data");
    this.tlsDir = path.join(baseDir, "tls");
    this.daemon = new Daemon({
      what: `etcd member in ${baseDir}`,
      pidFile: path.join(baseDir, "etcd.pid"),
      logFile: path.join(baseDir, "etcd.log"),
      marker: this.dataDir,
    });
  }

  /** `serviceAddress`: also listen there (the agent has put it on the host's loopback). */
  argv(spec: EtcdMemberSpec, opts: { serviceAddress?: string } = {}): string[] {
    const tls = (f: string) => path.join(this.tlsDir, f);
    const cluster = spec.initialCluster.map((m) => `${m.name}=${m.peerUrl}`).join(",");
    const service = opts.serviceAddress ? [clientUrlOf({ ...spec, address: opts.serviceAddress })] : [];
    const etcd = [
      ETCD_BIN,
      `--name=${spec.name}`,
      `--data-dir=${this.dataDir}`,
      `--listen-client-urls=${[clientUrlOf(spec), ...service].join(",")}`,
      `--advertise-client-urls=${clientUrlOf(spec)}`,
      `--listen-peer-urls=${peerUrlOf(spec)}`,
      `--initial-advertise-peer-urls=${peerUrlOf(spec)}`,
      `--initial-cluster=${cluster}`,
      "--initial-cluster-state=new",
      `--initial-cluster-token=${spec.clusterToken}`,
      "--client-cert-auth",
      `--trusted-ca-file=${tls("ca.crt")}`,
      `--cert-file=${tls("member.crt")}`,
      `--key-file=${tls("member.key")}`,
      "--peer-client-cert-auth",
      `--peer-trusted-ca-file=${tls("ca.crt")}`,
      `--peer-cert-file=${tls("member.crt")}`,
      `--peer-key-file=${tls("member.key")}`,
      // Patroni writes a few keys per cluster every second: keep history short and the db small.
      "--auto-compaction-mode=periodic",
      "--auto-compaction-retention=10m",
      "--snapshot-count=10000",
      "--logger=zap",
      "--log-outputs=stderr",
    ];
    const user = daemonUser(ETCD_OS_USER);
    // setpriv execs etcd: the pid spawned is etcd's own, unprivileged from its first instruction.
    return user
      ? ["setpriv", `--reuid=${user.uid}`, `--regid=${user.gid}`, "--init-groups", "--reset-env", ...etcd]
      : etcd;
  }

  /** Writes its TLS files and starts it unless it runs. Health needs a quorum: see healthy(). */
  async ensure(spec: EtcdMemberSpec, opts: { serviceAddress?: string } = {}): Promise<{ started: boolean }> {
    const owner = daemonUser(ETCD_OS_USER);
    await ensureDir(this.baseDir, 0o755, undefined);
    await ensureDir(this.tlsDir, 0o700, owner);
    await ensureDir(this.dataDir, 0o700, owner);
    const argv = this.argv(spec, opts);
    const changed = [
      // What it was started with: a new listen address needs a restart too.
      await writeFileAtomic(path.join(this.baseDir, "argv.json"), JSON.stringify(argv), 0o644, undefined),
      await writeFileAtomic(path.join(this.tlsDir, "ca.crt"), spec.tls.caPem, 0o644, owner),
      await writeFileAtomic(path.join(this.tlsDir, "member.crt"), spec.tls.certPem, 0o644, owner),
      await writeFileAtomic(path.join(this.tlsDir, "member.key"), spec.tls.keyPem, 0o600, owner),
    ].some(Boolean);
    if ((await this.daemon.pid()) !== null) {
      if (!changed) return { started: false };
      await this.daemon.stop();
    }
    await this.daemon.start(argv);
    return { started: true };
  }

  /** The service address it was last started with (argv.json), if any. */
  async serviceAddress(): Promise<string | null> {
    const text = await fs.readFile(path.join(this.baseDir, "argv.json"), "utf8").catch(() => null);
    const listen = text
      ? (JSON.parse(text) as string[]).find((a) => a.startsWith("--listen-client-urls="))
      : null;
    const second = listen?.split(",")[1];
    return second ? new URL(second).hostname : null;
  }

  async running(): Promise<boolean> {
    return (await this.daemon.pid()) !== null;
  }

  healthy(spec: EtcdMemberSpec): Promise<boolean> {
    return memberHealthy(clientUrlOf(spec), spec.tls);
  }

  logTail(): Promise<string> {
    return this.daemon.logTail();
  }

  stop(): Promise<void> {
    return this.daemon.stop();
  }

  async destroy(): Promise<void> {
    await this.daemon.stop();
    await fs.rm(this.baseDir, { recursive: true, force: true });
  }
}
