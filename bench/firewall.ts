// Firewall rule latency: from a rule's creation (or deletion) through the API to its effect
// on a client's connections, on a real Dedicated database (edge nftables + HAProxy).
//   client: a namespace on the public side, probing the database's public endpoint every
//           ~20 ms: "allowed" once a TCP connection stays open (past the edge and the
//           gateway's source check), "denied" once it is refused or closed at once.
//   change: POST a custom_range rule for the client, wait for "allowed"; DELETE it, wait for
//           "denied". Effect = first probe of the new state after the API call began.
//           Each change starts on a settled database (every instance reports the previous
//           generation), as a rule change on a database in use would.
// Usage: npx tsx bench/firewall.ts [--changes=50]
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { inNetns } from "../src/runtime/netns.ts";
import { ensurePublicBridge } from "../src/runtime/vpc.ts";
import { NetLab } from "../test/support/net-lab.ts";
import { startBenchCellar, type BenchCellar } from "./support/cellar.ts";
import {
  cleanupOnSignal,
  intFlag,
  machineFacts,
  mean,
  ms,
  parseFlags,
  percentile,
  sampleLoad,
  waitUntil,
} from "./support/stats.ts";

const flags = parseFlags(process.argv.slice(2));
const CHANGES = intFlag(flags, "changes", 50);
// Loopback and public addresses of this benchmark only.
const SUBNET = 93;
const PUBLIC = `198.19.${SUBNET}.0/24`;
const CLIENT = `198.19.${SUBNET}.150`;
const EFFECT_TIMEOUT_MS = 60_000;

// Runs in the client namespace: one connection attempt at a time, a line per state change.
const PROBE = `
const net = require("node:net");
const [host, port] = process.argv.slice(1);
let last = "";
const report = (state) => {
  if (state !== last) { last = state; console.log(JSON.stringify({ t: Date.now(), state })); }
};
const attempt = () => {
  const s = net.connect({ host, port: Number(port) });
  let settled = false;
  const settle = (state) => { if (settled) return; settled = true; s.destroy(); report(state); setTimeout(attempt, 20); };
  s.on("connect", () => setTimeout(() => settle("allowed"), 40));
  s.on("close", () => settle("denied"));
  s.on("error", () => settle("denied"));
  setTimeout(() => settle("denied"), 1000);
};
attempt();
`;

class Probe {
  private child: ChildProcess;
  private changes: Array<{ t: number; state: string }> = [];

  constructor(ns: string, host: string, port: number) {
    const [cmd, ...args] = inNetns(ns, [process.execPath, "-e", PROBE, host, String(port)]);
    this.child = spawn(cmd!, args, { stdio: ["ignore", "pipe", "inherit"] });
    createInterface({ input: this.child.stdout! }).on("line", (line) => {
      this.changes.push(JSON.parse(line) as { t: number; state: string });
    });
  }

  /** When the probe first saw `state` at or after `since` (epoch ms). */
  async reached(state: string, since: number): Promise<number> {
    let at = 0;
    await waitUntil(
      `the probe to see ${state}`,
      EFFECT_TIMEOUT_MS,
      () => {
        const hit = this.changes.find((c) => c.state === state && c.t >= since);
        at = hit?.t ?? 0;
        return Promise.resolve(hit !== undefined);
      },
      5,
    );
    return at;
  }

  stop(): void {
    this.child.kill("SIGKILL");
  }
}

async function dedicatedDatabase(c: BenchCellar): Promise<{ id: string; host: string; port: number }> {
  const res = await c.api("POST", "/v1/databases", {
    database: { name: "bench-walled", technology: "postgresql-ng", plan: "postgresql-dr-starter-4096" },
  });
  if (res.status !== 201) throw new Error(`creating the database: ${res.status} ${JSON.stringify(res.json)}`);
  const id = res.json.database.id as string;
  await waitUntil("the database to run", 180_000, async () => {
    const db = await c.api("GET", `/api/databases/${id}`);
    return db.json?.database?.status === "running";
  });
  const ep = (await c.api("GET", `/v1/databases/${id}/endpoints`)).json.endpoints[0];
  return { id, host: ep.hostname as string, port: ep.port as number };
}

/** Every instance of the database runs its current generation (the agent reported it). */
async function settled(c: BenchCellar, id: string): Promise<void> {
  await waitUntil("the previous change to be applied everywhere", EFFECT_TIMEOUT_MS, async () => {
    const { rows } = await c.controller.deps.db.query<{ pending: number }>(
      `SELECT count(*)::int AS pending FROM instances i JOIN databases d ON d.id = i.database_id
       WHERE d.id = $1 AND (i.observed_generation < d.generation OR i.status <> 'running')`,
      [id],
    );
    return rows[0]!.pending === 0;
  });
}

function summary(name: string, values: number[]): string {
  return `| ${name} | ${values.length} | ${ms(percentile(values, 50))} | ${ms(percentile(values, 95))} | ${ms(Math.max(...values))} | ${ms(mean(values))} |`;
}

async function main(): Promise<void> {
  const cellar = await startBenchCellar({
    subnet: SUBNET,
    hosts: [{ name: "bench-fw-d1", pool: "dedicated", vcpu: 2, ramMb: 8192, diskGb: 100 }],
    env: { CELLAR_PUBLIC_NETWORK: PUBLIC },
  });
  const lab = new NetLab(PUBLIC);
  let probe: Probe | null = null;
  const cleanup = async () => {
    probe?.stop();
    await lab.close();
    await cellar.close();
  };
  const release = cleanupOnSignal(cleanup);
  try {
    const db = await dedicatedDatabase(cellar);
    await ensurePublicBridge(PUBLIC);
    const client = await lab.client("bench-client", CLIENT);
    probe = new Probe(client, db.host, db.port);
    await probe.reached("denied", 0);
    const load = sampleLoad();
    const created: number[] = [];
    const deleted: number[] = [];
    let ruleId = "";
    for (let i = 0; i < CHANGES; i++) {
      await settled(cellar, db.id);
      const since = Date.now();
      if (i % 2 === 0) {
        const res = await cellar.api("POST", `/api/databases/${db.id}/firewall_rules`, {
          type: "custom_range",
          cidr: `${CLIENT}/32`,
        });
        if (res.status !== 201) throw new Error(`creating a rule: ${res.status} ${JSON.stringify(res.json)}`);
        ruleId = res.json.rule.id;
        created.push((await probe.reached("allowed", since)) - since);
      } else {
        const res = await cellar.api("DELETE", `/api/databases/${db.id}/firewall_rules/${ruleId}`);
        if (res.status !== 204) throw new Error(`deleting a rule: ${res.status}`);
        deleted.push((await probe.reached("denied", since)) - since);
      }
      process.stderr.write(`change ${i + 1}/${CHANGES}: ${ms((i % 2 === 0 ? created : deleted).at(-1)!)}\n`);
    }
    const l = load.stop();
    console.log(`machine: ${machineFacts()}; load average ${l.min.toFixed(1)}-${l.max.toFixed(1)}`);
    console.log("| change | n | p50 | p95 | max | mean |\n|---|---|---|---|---|---|");
    console.log(summary("create → allowed", created));
    console.log(summary("delete → denied", deleted));
    console.log(summary("all", [...created, ...deleted]));
  } finally {
    release();
    await cleanup();
  }
}

main().catch((err: Error) => {
  console.error(err.message);
  process.exit(1);
});
