// A CPU profile of a running agent for the density benchmark: SIGUSR1 opens its inspector,
// a helper process (Node 20 has WebSocket only behind --experimental-websocket) records
// `seconds` of the V8 profiler, and the summary says where the main thread's time went.
// Run directly, this file is that helper: <pid> <port> <seconds> <out.cpuprofile>.
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import { fileURLToPath } from "node:url";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  seconds: number;
  /** Share of the time the main thread was not idle in the event loop. */
  busy: number;
  /** Function (name and file:line) -> share of all samples with it on the stack. */
  inclusive: Array<{ frame: string; share: number }>;
  self: Array<{ frame: string; share: number }>;
}

const INSPECTOR_PORT = 9229;

/** Profiles process `pid` for `seconds`; writes the raw profile to `outFile` and summarises it. */
export async function profileProcess(pid: number, seconds: number, outFile: string): Promise<ProfileSummary> {
  process.kill(pid, "SIGUSR1");
  const self = fileURLToPath(import.meta.url);
  await new Promise<void>((resolve, reject) =>
    execFile(
      process.execPath,
      [
        "--experimental-websocket",
        "--import",
        "tsx",
        self,
        String(pid),
        String(INSPECTOR_PORT),
        String(seconds),
        outFile,
      ],
      { timeout: (seconds + 60) * 1000 },
      (err, _out, stderr) => (err ? reject(new Error(`profiler: ${stderr || err.message}`)) : resolve()),
    ),
  );
  return summarise(JSON.parse(await fs.readFile(outFile, "utf8")) as CpuProfile);
}

const frameName = (n: ProfileNode) => {
  const file = n.callFrame.url.replace(/^.*\/(src|node_modules)\//, "$1/").replace(/^node:/, "");
  return `${n.callFrame.functionName || "(anonymous)"} ${file}:${n.callFrame.lineNumber + 1}`;
};

export function summarise(p: CpuProfile): ProfileSummary {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const weight = new Map<number, number>();
  p.samples.forEach((id, i) => weight.set(id, (weight.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
  const total = [...weight.values()].reduce((a, b) => a + b, 0) || 1;
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let idle = 0;
  for (const [id, w] of weight) {
    const leaf = byId.get(id)!;
    if (leaf.callFrame.functionName === "(idle)") idle += w;
    self.set(frameName(leaf), (self.get(frameName(leaf)) ?? 0) + w);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const name = frameName(byId.get(cur)!);
      if (seen.has(name)) continue;
      seen.add(name);
      inclusive.set(name, (inclusive.get(name) ?? 0) + w);
    }
  }
  const top = (m: Map<string, number>, n: number) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([frame, w]) => ({ frame, share: w / total }));
  return { seconds: total / 1e6, busy: 1 - idle / total, inclusive: top(inclusive, 40), self: top(self, 25) };
}

export function printSummary(s: ProfileSummary): void {
  const pct = (x: number) => `${(x * 100).toFixed(1)}%`.padStart(6);
  console.log(`agent main thread over ${s.seconds.toFixed(0)} s: busy ${pct(s.busy)}`);
  console.log("  inclusive (on the stack):");
  for (const f of s.inclusive) if (f.share >= 0.01) console.log(`   ${pct(f.share)}  ${f.frame}`);
  console.log("  self:");
  for (const f of s.self) if (f.share >= 0.005) console.log(`   ${pct(f.share)}  ${f.frame}`);
}

interface MiniSocket {
  send(data: string): void;
  close(): void;
  addEventListener(type: string, fn: (ev: { data?: unknown }) => void): void;
}

/** The helper: Chrome DevTools protocol over the inspector's WebSocket. */
async function recordProfile(port: number, seconds: number, outFile: string): Promise<void> {
  let targets: Array<{ webSocketDebuggerUrl: string }> = [];
  const deadline = Date.now() + 10_000;
  while (targets.length === 0) {
    targets = await fetch(`http://127.0.0.1:${port}/json/list`)
      .then((r) => r.json() as Promise<typeof targets>)
      .catch(() => []);
    if (targets.length === 0 && Date.now() > deadline) throw new Error("inspector did not open");
    if (targets.length === 0) await new Promise((r) => setTimeout(r, 200));
  }
  const Ws = (globalThis as unknown as { WebSocket: new (url: string) => MiniSocket }).WebSocket;
  const ws = new Ws(targets[0]!.webSocketDebuggerUrl);
  await new Promise<void>((resolve) => ws.addEventListener("open", () => resolve()));
  let nextId = 1;
  const pending = new Map<number, (result: unknown) => void>();
  ws.addEventListener("message", (ev) => {
    const msg = JSON.parse(String(ev.data)) as { id?: number; result?: unknown };
    if (msg.id !== undefined) pending.get(msg.id)?.(msg.result);
  });
  const call = (method: string, params: Record<string, unknown> = {}) =>
    new Promise<unknown>((resolve) => {
      const id = nextId++;
      pending.set(id, resolve);
      ws.send(JSON.stringify({ id, method, params }));
    });
  await call("Profiler.enable");
  await call("Profiler.setSamplingInterval", { interval: 1000 });
  await call("Profiler.start");
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const { profile } = (await call("Profiler.stop")) as { profile: CpuProfile };
  await fs.writeFile(outFile, JSON.stringify(profile));
  ws.close();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [, , , port, seconds, out] = process.argv;
  recordProfile(Number(port), Number(seconds), out!).then(
    () => process.exit(0),
    (err: Error) => {
      console.error(err.message);
      process.exit(1);
    },
  );
}
