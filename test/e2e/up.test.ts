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

async function processesMentioning(text: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await fs.readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
    const stat = await fs.readFile(`/proc/${entry}/stat`, "utf8").catch(() => "");
    if (cmdline.includes(text) && !/^\d+ \(.*\) Z/.test(stat)) pids.push(Number(entry));
  }
  return pids;
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

describe("cellar up (all-in-one)", () => {
  let child: ChildProcess | undefined;
  let dataDir = "";
  after(async () => {
    if (child && child.exitCode === null) child.kill("SIGKILL");
    if (dataDir) await fs.rm(dataDir, { recursive: true, force: true });
  });

  it("starts store, API and five local hosts, prints how to log in, and stops cleanly on Ctrl-C", async () => {
    dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-up-"));
    await fs.chmod(dataDir, 0o755);
    const [port, agentPort] = [await freePort(), await freePort()];
    let out = "";
    child = spawn(path.join(REPO_ROOT, "bin/cellar"), ["up"], {
      env: {
        ...process.env,
        CELLAR_DATA_DIR: dataDir,
        CELLAR_PORT: String(port),
        CELLAR_AGENT_PORT: String(agentPort),
        CELLAR_LOG_LEVEL: "warn",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child!.on("exit", (code) => resolve(code)));

    await until("the banner", () => Promise.resolve(out.includes("Cellar is up") ? true : undefined));
    assert.match(out, new RegExp(`API http://127\\.0\\.0\\.1:${port}`));
    assert.match(out, /bin\/cellar login --api-url/);
    const token = (await fs.readFile(path.join(dataDir, "admin-token"), "utf8")).trim();
    assert.match(token, /^tk-us-/);
    const exchange = await fetch(`http://127.0.0.1:${port}/v1/tokens/exchange`, {
      method: "POST",
      headers: { authorization: `Basic ${Buffer.from(`:${token}`).toString("base64")}` },
    });
    const bearer = ((await exchange.json()) as { token: string }).token;
    const hosts = await until("five ready hosts", async () => {
      const res = await fetch(`http://127.0.0.1:${port}/v1/admin/hosts`, {
        headers: { authorization: `Bearer ${bearer}` },
      });
      const body = (await res.json()) as {
        hosts: Array<{ name: string; pool: string; az: string; status: string }>;
      };
      return body.hosts.filter((h) => h.status === "ready").length === 5 ? body.hosts : undefined;
    });
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

    child.kill("SIGINT");
    assert.equal(await exited, 0);
    // Store, agents and everything they ran are gone.
    await until(
      "every process of this data dir to exit",
      async () => ((await processesMentioning(dataDir)).length === 0 ? true : undefined),
      20_000,
    );
  });
});
