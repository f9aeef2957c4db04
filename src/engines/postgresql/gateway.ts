// A database gateway: one HAProxy process in front of the database's node(s).
//
// HAProxy runs in the foreground (-db) as a direct, detached child of the agent: Node
// reaps it when it exits (no zombie), Ctrl-C on the agent's terminal does not reach it,
// and it keeps serving if the agent dies. A restarted agent adopts it through the pid
// file (checked against /proc and the admin socket, never with kill -0).
// Reload starts a new process that takes the listening socket over from the old one
// through the admin socket (-x) and tells it to finish its sessions (-sf): no
// connection is refused during a reload.
//
// Layout under baseDir (owned by the haproxy OS user when we are root):
//   haproxy.cfg, haproxy.pid, admin.sock, haproxy.log
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { daemonUser, ensureDir, type OsUser, writeFileAtomic } from "./command.ts";
import { CommandFailedError, PortInUseError } from "./errors.ts";
import { ALLOW_FILE, swapAllowList, writeAllowList } from "./gateway-allow-list.ts";
import { launchInNetns, runsInNetns } from "./gateway-netns.ts";
import { type GatewaySpec, renderHaproxyConfig } from "./haproxy-config.ts";
import {
  findProcesses,
  isProcessAlive,
  processCommandLine,
  signalProcess,
  waitFor,
} from "./process-watch.ts";

export const HAPROXY_BIN = "/usr/sbin/haproxy";
const READY_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;

export interface GatewayOptions {
  /** The gateway instance id (inst-...). */
  id: string;
  /** Deterministic from the id, e.g. <host data dir>/instances/<id>. */
  baseDir: string;
  /** Directory of the admin socket (default baseDir); HAProxy allows socket paths of 97 bytes at most. */
  runDir?: string;
}

export class Gateway {
  readonly baseDir: string;
  readonly configFile: string;
  readonly pidFile: string;
  readonly adminSocket: string;
  readonly logFile: string;
  /** Where the next launch runs (set by ensure from the spec). */
  private netns: string | undefined;

  constructor(readonly opts: GatewayOptions) {
    this.baseDir = path.resolve(opts.baseDir);
    this.configFile = path.join(this.baseDir, "haproxy.cfg");
    this.pidFile = path.join(this.baseDir, "haproxy.pid");
    this.adminSocket = path.join(opts.runDir ?? this.baseDir, "admin.sock");
    this.logFile = path.join(this.baseDir, "haproxy.log");
  }

  private get user(): OsUser | undefined {
    return daemonUser("haproxy");
  }

  /** Converges to `spec`: writes the config, then starts or (if it changed) reloads. */
  async ensure(spec: GatewaySpec): Promise<"started" | "reloaded" | "updated" | "unchanged"> {
    this.netns = spec.netns;
    const allow = spec.acl?.allow;
    const allowFile = path.join(this.baseDir, ALLOW_FILE);
    if (spec.acl && allow) spec = { ...spec, acl: { ...spec.acl, file: allowFile } };
    const changed = await this.writeConfig(spec);
    const listChanged = allow ? await writeAllowList(allowFile, allow, this.user) : false;
    // Listeners cannot be handed over between namespaces: a gateway that moves starts afresh.
    const pid = await this.pid();
    if (pid !== null && !(await runsInNetns(pid, spec.netns))) await this.stop();
    if (!(await this.isRunning())) {
      await this.start();
      return "started";
    }
    if (!changed && !listChanged) return "unchanged";
    // Only the allow list changed: swapped in the running process, else a reload reads it.
    if (!changed && allow && (await swapAllowList(this.adminSocket, allowFile, allow).catch(() => false))) {
      return "updated";
    }
    await this.reload();
    return "reloaded";
  }

  /** Writes haproxy.cfg; returns whether it changed. */
  async writeConfig(spec: GatewaySpec): Promise<boolean> {
    await ensureDir(this.baseDir, 0o700, this.user);
    await ensureDir(path.dirname(this.adminSocket), 0o700, this.user);
    const { checkCaPem, ...rest } = spec;
    const input = { ...rest, name: this.opts.id, adminSocket: this.adminSocket };
    let caChanged = false;
    if (checkCaPem) {
      const checkCaFile = path.join(this.baseDir, "check-ca.pem");
      caChanged = await writeFileAtomic(checkCaFile, checkCaPem, 0o644, this.user);
      Object.assign(input, { checkCaFile });
    }
    const config = renderHaproxyConfig(input);
    return (await writeFileAtomic(this.configFile, config, 0o600, this.user)) || caChanged;
  }

  /** The pid of the serving HAProxy, or null (stale pid files and recycled pids are ignored). */
  async pid(): Promise<number | null> {
    const fromFile = Number((await fs.readFile(this.pidFile, "utf8").catch(() => "")).trim());
    // The pid file is written after start: an agent killed just before leaves only the socket.
    const candidates = [fromFile, await this.adminPid()];
    for (const pid of candidates) {
      if (!pid || !Number.isInteger(pid) || !(await isProcessAlive(pid))) continue;
      const cmdline = await processCommandLine(pid);
      if (cmdline?.[0] === HAPROXY_BIN && cmdline.includes(this.configFile)) return pid;
    }
    return null;
  }

  /** Serving: the pid-file process is alive and owns the admin socket. */
  async isRunning(): Promise<boolean> {
    const pid = await this.pid();
    return pid !== null && (await this.adminPid()) === pid;
  }

  async start(): Promise<void> {
    if (await this.isRunning()) return;
    await this.stop(); // a half-started or stale process must not hold the port
    await this.launch([]);
  }

  /** Replaces the process with one reading the current config, without closing the listener. */
  async reload(): Promise<void> {
    const old = await this.pid();
    if (old === null) return this.start();
    await this.launch(["-sf", String(old), "-x", this.adminSocket]);
  }

  private async launch(extraArgs: string[]): Promise<void> {
    const logOffset = await fs.stat(this.logFile).then(
      (s) => s.size,
      () => 0,
    );
    const log = await fs.open(this.logFile, "a", 0o600);
    const user = this.user;
    let child: ChildProcess;
    try {
      const argv = ["-db", "-f", this.configFile, ...extraArgs];
      const inNs = this.netns ? launchInNetns(this.netns, user, [HAPROXY_BIN, ...argv]) : null;
      child = spawn(inNs?.command ?? HAPROXY_BIN, inNs?.args ?? argv, {
        cwd: "/",
        detached: true,
        stdio: ["ignore", log.fd, log.fd],
        // In a namespace, setpriv drops privileges once nsenter (as root) has joined it.
        ...(user && !inNs ? { uid: user.uid, gid: user.gid } : {}),
      });
    } finally {
      await log.close();
    }
    child.unref();
    const pid = child.pid;
    if (pid === undefined) throw new CommandFailedError("haproxy", "could not be spawned");

    const exited = new Promise<never>((_, reject) =>
      child.once("exit", (code) => {
        reject(new Error(`exited with code ${code ?? "?"}`));
      }),
    );
    exited.catch(() => undefined);
    try {
      // Ready once it owns the admin socket: by then it has bound (or taken over) its listener.
      await Promise.race([
        waitFor(
          `gateway ${this.opts.id} to start`,
          async () => (await this.adminPid()) === pid,
          READY_TIMEOUT_MS,
        ),
        exited,
      ]);
    } catch (err) {
      if (child.exitCode === null) child.kill("SIGKILL");
      throw await this.explainLaunchFailure(err as Error, logOffset);
    }
    await writeFileAtomic(this.pidFile, `${pid}\n`, 0o644, this.user);
  }

  private async explainLaunchFailure(err: Error, logOffset: number): Promise<Error> {
    const log = await fs.readFile(this.logFile).then(
      (b) => b.subarray(logOffset).toString("utf8"),
      () => "",
    );
    const bind = /cannot bind socket \(Address already in use\) (?:for )?\[([^\]]+)\]/.exec(log);
    if (bind?.[1]) {
      const sep = bind[1].lastIndexOf(":");
      return new PortInUseError("haproxy", bind[1].slice(0, sep), Number(bind[1].slice(sep + 1)));
    }
    const alerts = log
      .split("\n")
      .filter((l) => l.includes("[ALERT]"))
      .slice(-5)
      .join("\n");
    return new CommandFailedError(`haproxy (gateway ${this.opts.id})`, `${err.message}\n${alerts}`.trim());
  }

  /** Asks the admin socket which process serves it ("show info" → Pid). */
  private adminPid(): Promise<number | null> {
    return new Promise((resolve) => {
      const socket = net.connect({ path: this.adminSocket });
      let out = "";
      const done = (pid: number | null) => {
        socket.destroy();
        resolve(pid);
      };
      socket.setTimeout(1000, () => done(null));
      socket.on("data", (d: Buffer) => (out += d.toString("utf8")));
      socket.once("error", () => done(null));
      socket.once("end", () => done(Number(/^Pid: (\d+)$/m.exec(out)?.[1]) || null));
      socket.once("connect", () => socket.end("show info\n"));
    });
  }

  /** Stops every HAProxy of this gateway: the serving one, adopted or ours, and draining ones. */
  async stop(): Promise<void> {
    // A /proc scan also finds processes draining after a reload made by an earlier agent.
    const pids = await findProcesses(HAPROXY_BIN, this.configFile);
    for (const pid of pids) signalProcess(pid, "SIGTERM");
    for (const pid of pids) {
      const gone = () => isProcessAlive(pid).then((alive) => !alive);
      await waitFor(`haproxy ${pid} to exit`, gone, STOP_TIMEOUT_MS).catch(async () => {
        signalProcess(pid, "SIGKILL");
        await waitFor(`haproxy ${pid} to exit after SIGKILL`, gone, STOP_TIMEOUT_MS);
      });
    }
    await fs.rm(this.pidFile, { force: true });
    await fs.rm(this.adminSocket, { force: true });
  }

  /** Stops it and removes its directory. */
  async destroy(): Promise<void> {
    await this.stop();
    await fs.rm(this.baseDir, { recursive: true, force: true });
  }
}
