// The quick start's first command: `cellar up` brings up the store, the API and the local
// fleet on embedded defaults, and Ctrl-C stops all of it.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { REPO_ROOT } from "../../src/config.ts";
import { freePort } from "../support/cluster.ts";

/** Live processes whose command line mentions `text`: their pid and command line. */
async function processesMentioning(text: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await fs.readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
    const stat = await fs.readFile(`/proc/${entry}/stat`, "utf8").catch(() => "");
    if (cmdline.includes(text) && !/^\d+ \(.*\) Z/.test(stat))
      found.push(`${entry} ${cmdline.replaceAll("\0", " ").trim().slice(0, 200)}`);
  }
  return found;
}

async function until<T>(what: string, check: () => Promise<T | undefined>, ms = 90_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

interface Up {
  child: ChildProcess;
  port: number;
  output: () => string;
  exited: Promise<number | null>;
}

function startUp(dataDir: string, port: number, agentPort: number): Up {
  let out = "";
  const child = spawn(path.join(REPO_ROOT, "bin/cellar"), ["up"], {
    env: {
      ...process.env,
      CELLAR_DATA_DIR: dataDir,
      CELLAR_PORT: String(port),
      CELLAR_AGENT_PORT: String(agentPort),
      CELLAR_LOG_LEVEL: "warn",
      // The test polls the admin API; the default 60 requests a minute is for clients.
      CELLAR_RATE_LIMIT_PER_MINUTE: "10000",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, port, output: () => out, exited };
}

/** Waits for the five local hosts through the admin API; a timeout says what was last seen. */
async function readyHosts(dataDir: string, up: Up) {
  const token = (await fs.readFile(path.join(dataDir, "admin-token"), "utf8")).trim();
  let seen = "no answer yet";
  try {
    return await until("five ready hosts", async () => {
      const exchange = await fetch(`http://127.0.0.1:${up.port}/v1/tokens/exchange`, {
        method: "POST",
        headers: { authorization: `Basic ${Buffer.from(`:${token}`).toString("base64")}` },
      });
      const bearer = ((await exchange.json()) as { token: string }).token;
      const res = await fetch(`http://127.0.0.1:${up.port}/v1/admin/hosts`, {
        headers: { authorization: `Bearer ${bearer}` },
      });
      if (res.status !== 200) {
        seen = `GET /v1/admin/hosts answered ${res.status}`;
        return undefined;
      }
      const body = (await res.json()) as {
        hosts: Array<{ name: string; pool: string; az: string; status: string }>;
      };
      seen = body.hosts.map((h) => `${h.name} ${h.status}`).join(", ") || "no host registered";
      return body.hosts.filter((h) => h.status === "ready").length === 5 ? body.hosts : undefined;
    });
  } catch (err) {
    throw new Error(`${(err as Error).message}; last seen: ${seen}\n${up.output().slice(-3000)}`);
  }
}

describe("cellar up (all-in-one)", () => {
  const dirs: string[] = [];
  const running: Up[] = [];
  after(async () => {
    for (const up of running) if (up.child.exitCode === null) up.child.kill("SIGKILL");
    for (const dir of dirs) {
      await until(
        "leftover processes to exit",
        async () => ((await processesMentioning(dir)).length === 0 ? true : undefined),
        20_000,
      ).catch(() => undefined);
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  const newDataDir = async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-up-"));
    await fs.chmod(dir, 0o755);
    dirs.push(dir);
    return dir;
  };
  const launch = async (dataDir: string) => {
    const up = startUp(dataDir, await freePort(), await freePort());
    running.push(up);
    await until("the banner", () => Promise.resolve(up.output().includes("Cellar is up") ? true : undefined));
    return up;
  };
  /** Every process of the data dir gone; a loaded machine's store may take a while to stop. */
  const noneLeft = async (dataDir: string) => {
    let left: string[] = [];
    await until(
      "every process of this data dir to exit",
      async () => ((left = await processesMentioning(dataDir)).length === 0 ? true : undefined),
      60_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}; still running: ${left.join(" | ")}`);
    });
  };

  it("starts store, API and five local hosts, prints how to log in, and stops cleanly on Ctrl-C", async () => {
    const dataDir = await newDataDir();
    const up = await launch(dataDir);
    assert.match(up.output(), new RegExp(`API http://127\\.0\\.0\\.1:${up.port}`));
    assert.match(up.output(), /bin\/cellar login --api-url/);
    assert.match((await fs.readFile(path.join(dataDir, "admin-token"), "utf8")).trim(), /^tk-us-/);
    const hosts = await readyHosts(dataDir, up);
    assert.deepEqual(
      hosts.filter((h) => h.pool === "shared").map((h) => h.az),
      ["osc-fr1-a", "osc-fr1-a"],
    );
    assert.deepEqual(
      hosts
        .filter((h) => h.pool === "dedicated")
        .map((h) => h.az)
        .sort(),
      ["osc-fr1-a", "osc-fr1-b", "osc-fr1-c"],
    );
    up.child.kill("SIGINT");
    assert.equal(await up.exited, 0);
    await noneLeft(dataDir);
  });

  it("leaves no orphan agents when killed with -9, and a restart takes everything back", async () => {
    const dataDir = await newDataDir();
    const first = await launch(dataDir);
    await readyHosts(dataDir, first);
    first.child.kill("SIGKILL");
    await first.exited;
    // The agents notice their parent is gone and stop; only the store cluster may remain.
    await until(
      "the agents to exit",
      async () => ((await processesMentioning(`--state-dir=${dataDir}`)).length === 0 ? true : undefined),
      20_000,
    );
    const second = await launch(dataDir);
    await readyHosts(dataDir, second);
    second.child.kill("SIGINT");
    assert.equal(await second.exited, 0);
    await noneLeft(dataDir);
  });
});
