// The agent's loop against a small stand-in for the controller's agent API (HTTP on
// loopback) and an engine driver whose convergences the test holds and releases: reports
// go on while a convergence hangs, new instances do not wait for slow ones, a removal is
// done once, an instance found down is converged again, and news the driver announces (a
// backup landed) is reported before the next heartbeat.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { Agent } from "../../src/agent/agent.ts";
import { ControllerClient } from "../../src/agent/controller-client.ts";
import type { DesiredInstance, DriverEvents, InstanceDriver, Observation } from "../../src/agent/driver.ts";
import { silentLogger } from "../../src/log.ts";

interface WireInstance {
  id: string;
  database_id: string;
  kind: DesiredInstance["kind"];
  port: number;
  spec: Record<string, unknown>;
  spec_generation: number;
  desired_state: DesiredInstance["desiredState"];
}

interface Report {
  at: number;
  instances: Array<{ id: string; status: string; status_message: string }>;
}

/** The controller's agent API, as far as the agent's loop uses it. */
class FakeController {
  instances: WireInstance[] = [];
  reports: Report[] = [];
  private version = 1;
  private waiters: Array<() => void> = [];
  private server = http.createServer((req, res) => void this.handle(req, res));

  async listen(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/agent/v1`;
  }

  async close(): Promise<void> {
    for (const w of this.waiters) w();
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }

  set(instances: WireInstance[]): void {
    this.instances = instances;
    this.version++;
    for (const w of this.waiters.splice(0)) w();
  }

  lastStatus(id: string): string | undefined {
    return this.lastOf(id)?.status;
  }

  lastMessage(id: string): string | undefined {
    return this.lastOf(id)?.status_message;
  }

  private lastOf(id: string): Report["instances"][number] | undefined {
    for (let i = this.reports.length - 1; i >= 0; i--) {
      const found = this.reports[i]!.instances.find((x) => x.id === id);
      if (found) return found;
    }
    return undefined;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString("utf8")) : null;
    const url = new URL(req.url ?? "/", "http://x");
    const send = (json: unknown): void =>
      void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(json));
    if (url.pathname.endsWith("/register")) return send({ host: { id: "host-1" }, token: "tk-host-test" });
    if (url.pathname.endsWith("/hosts/self/report")) {
      this.reports.push({ at: Date.now(), instances: body.instances });
      return send({ ok: true });
    }
    if (url.pathname.endsWith("/hosts/self/desired")) {
      if (url.searchParams.get("version") === String(this.version)) {
        // Long poll, kept short here: answers when the set changes or after 200 ms.
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 200);
          this.waiters.push(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
      return send({ version: String(this.version), instances: this.instances });
    }
    res.writeHead(404).end();
  }
}

/** A driver whose instances run once converged, unless a test holds or stops them. */
class FakeDriver implements InstanceDriver {
  converges = new Map<string, number>();
  removes = new Map<string, number>();
  running = new Set<string>();
  held = new Map<string, { release: () => void; done: Promise<void> }>();
  local = new Set<string>();
  failNext = new Set<string>();
  /** What observe says of an instance besides its status (news the agent must report). */
  notes = new Map<string, string>();
  events: DriverEvents | null = null;
  listings = 0;

  watch(events: DriverEvents): void {
    this.events = events;
  }

  hold(id: string): void {
    let release = () => {};
    const done = new Promise<void>((r) => (release = r));
    this.held.set(id, { release, done });
  }

  release(id: string): void {
    this.held.get(id)?.release();
    this.held.delete(id);
  }

  async converge(inst: DesiredInstance): Promise<Observation> {
    this.converges.set(inst.id, (this.converges.get(inst.id) ?? 0) + 1);
    this.local.add(inst.id);
    if (this.failNext.delete(inst.id)) throw new Error("port taken");
    await this.held.get(inst.id)?.done;
    this.running.add(inst.id);
    return this.observe(inst);
  }

  observe(inst: DesiredInstance): Promise<Observation> {
    const up = this.running.has(inst.id);
    return Promise.resolve({
      status: up ? "running" : "stopped",
      message: this.notes.get(inst.id) ?? "",
      role: "",
      observedGeneration: up ? inst.specGeneration : 0,
      usage: {},
    });
  }

  remove(id: string): Promise<void> {
    this.removes.set(id, (this.removes.get(id) ?? 0) + 1);
    this.running.delete(id);
    this.local.delete(id);
    return Promise.resolve();
  }

  listLocal(): Promise<string[]> {
    this.listings++;
    return Promise.resolve([...this.local]);
  }
}

const inst = (id: string, desired: DesiredInstance["desiredState"] = "running", gen = 1): WireInstance => ({
  id,
  database_id: `db-${id}`,
  kind: "node",
  port: 5432,
  spec: {},
  spec_generation: gen,
  desired_state: desired,
});

async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("agent loop", () => {
  let controller: FakeController;
  let driver: FakeDriver;
  let agent: Agent;
  let stateDir: string;

  before(async () => {
    stateDir = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-agent-loop-"));
  });

  after(async () => {
    await fs.rm(stateDir, { recursive: true, force: true });
  });

  const startAgent = async (heartbeatMs = 50) => {
    controller = new FakeController();
    driver = new FakeDriver();
    const client = new ControllerClient({ url: await controller.listen() });
    agent = new Agent({
      name: "host-1",
      region: "r",
      az: "r-a",
      pool: "shared",
      address: "127.0.0.1",
      capacity: { vcpu: 2, ramMb: 1024, diskGb: 10 },
      isolation: {},
      stateDir,
      controller: client,
      joinToken: "join",
      driver,
      log: silentLogger,
      heartbeatMs,
      retryPolicy: { firstMs: 20, maxMs: 100 },
    });
  };

  afterEach(async () => {
    for (const id of [...driver.held.keys()]) driver.release(id);
    await agent.stop();
    await controller.close();
  });

  it("keeps reporting while a convergence hangs, and converges new instances meanwhile", async () => {
    await startAgent();
    driver.hold("inst-slow");
    controller.set([inst("inst-slow")]);
    await agent.start();
    await until("the slow convergence to start", () => driver.converges.get("inst-slow") === 1);
    // A new database arrives while the first one's convergence still runs.
    controller.set([inst("inst-slow"), inst("inst-new")]);
    await until(
      "the new instance to be reported running",
      () => controller.lastStatus("inst-new") === "running",
    );
    const from = controller.reports.length;
    const t0 = Date.now();
    await until("ten more reports", () => controller.reports.length >= from + 10);
    // Heartbeats every 50 ms: ten of them in well under the controller's silence limit.
    assert.ok(Date.now() - t0 < 3000, `ten reports took ${Date.now() - t0} ms`);
    assert.equal(driver.converges.get("inst-slow"), 1, "the hanging one is not started twice");
    driver.release("inst-slow");
    await until(
      "the slow one to be reported running",
      () => controller.lastStatus("inst-slow") === "running",
    );
  });

  it("removes a deleted instance once, however often the desired set changes", async () => {
    await startAgent();
    controller.set([inst("inst-a"), inst("inst-b")]);
    await agent.start();
    await until("both running", () =>
      ["inst-a", "inst-b"].every((i) => controller.lastStatus(i) === "running"),
    );
    controller.set([inst("inst-a", "deleted", 2), inst("inst-b")]);
    await until("the removal to be reported", () => controller.lastStatus("inst-a") === "removed");
    for (let n = 3; n < 6; n++) {
      controller.set([inst("inst-a", "deleted", 2), inst("inst-b"), inst(`inst-c${n}`)]);
      await until(`inst-c${n} running`, () => controller.lastStatus(`inst-c${n}`) === "running");
    }
    assert.equal(driver.removes.get("inst-a"), 1);
    assert.equal(driver.converges.get("inst-b"), 1, "a settled instance is left alone");
  });

  it("converges again an instance that a heartbeat finds down", async () => {
    await startAgent();
    controller.set([inst("inst-a")]);
    await agent.start();
    await until("running", () => controller.lastStatus("inst-a") === "running");
    assert.equal(driver.converges.get("inst-a"), 1);
    driver.running.delete("inst-a"); // its server died
    await until("a second convergence", () => driver.converges.get("inst-a") === 2);
    await until("running again", () => controller.lastStatus("inst-a") === "running");
  });

  it("retries a failed instance after its back-off, without spinning while the retry runs", async () => {
    await startAgent();
    driver.failNext.add("inst-a");
    driver.hold("inst-a");
    controller.set([inst("inst-a")]);
    await agent.start();
    await until("the retry to start", () => driver.converges.get("inst-a") === 2);
    // The retry hangs while its back-off entry is due: the agent must not look again and
    // again meanwhile (it once re-armed a 0 ms timer for it, a busy loop).
    const before = driver.listings;
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(driver.listings - before < 10, `${driver.listings - before} looks in 300 ms`);
    driver.release("inst-a");
    await until("running", () => controller.lastStatus("inst-a") === "running");
  });

  it("removes an orphan found on disk", async () => {
    await startAgent();
    driver.local.add("inst-orphan");
    controller.set([inst("inst-a")]);
    await agent.start();
    await until("the orphan removed", () => driver.removes.get("inst-orphan") === 1);
    await until("running", () => controller.lastStatus("inst-a") === "running");
  });

  it("reports what the driver announces at once, not at the next heartbeat", async () => {
    // Heartbeats a minute apart: only the announcement can bring the news within the test.
    await startAgent(60_000);
    controller.set([inst("inst-a")]);
    await agent.start();
    await until(
      "running (reported after the convergence)",
      () => controller.lastStatus("inst-a") === "running",
    );
    const reports = controller.reports.length;
    driver.notes.set("inst-a", "a backup landed");
    driver.events!.report();
    await until("the news reported", () => controller.lastMessage("inst-a") === "a backup landed", 2000);
    assert.ok(controller.reports.length > reports);
  });

  it("reports what the driver tells of an instance while it converges, then what the convergence found", async () => {
    await startAgent(60_000);
    controller.set([inst("inst-a")]);
    await agent.start();
    await until("running", () => controller.lastStatus("inst-a") === "running");
    // A lost Patroni: the node converges again (held here), and is told restarting meanwhile.
    driver.hold("inst-a");
    driver.events!.converge();
    await until("the convergence under way", () => driver.converges.get("inst-a") === 2);
    driver.events!.observed("inst-a", {
      status: "restarting",
      message: "fenced",
      role: "",
      observedGeneration: 0,
      usage: {},
    });
    await until("restarting reported", () => controller.lastStatus("inst-a") === "restarting", 2000);
    driver.release("inst-a");
    await until("running again", () => controller.lastStatus("inst-a") === "running", 2000);
  });
});
