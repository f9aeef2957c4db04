// A node's sandbox left behind without its directory (an agent killed while a test or the
// host removed its files) is an orphan the agent finds and removes: it would otherwise keep
// its CPUs, and a Dedicated node's exclusive ones would refuse every new node of the host.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { PostgresDriver } from "../../src/agent/postgres.driver.ts";
import { shortRunDir } from "../../src/main/agent-main.ts";
import { createIsolationRuntime } from "../../src/runtime/factory.ts";
import { probeIsolation } from "../../src/runtime/probe.ts";
import type { IsolationRuntime } from "../../src/runtime/types.ts";

describe("orphan sandboxes", () => {
  let stateDir = "";
  let runtime: IsolationRuntime;
  let driver: PostgresDriver;
  let isolates = false;

  before(async () => {
    stateDir = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-orphan-"));
    runtime = await createIsolationRuntime(await probeIsolation(), {
      parent: `cellar-orphan-${process.pid}`,
    });
    driver = new PostgresDriver({ stateDir, runDir: shortRunDir(stateDir), runtime, exclusiveCpus: [] });
    await runtime.ensureSandbox("cellar-inst-orphan1", { memoryBytes: 64 * 1024 * 1024 });
    isolates = (await runtime.listSandboxes()).length > 0;
  });
  after(async () => {
    for (const name of (await runtime?.listSandboxes()) ?? []) await runtime.removeSandbox(name);
    for (const file of runtime?.procsFiles("cellar-inst-x") ?? []) {
      await fs.rmdir(path.dirname(path.dirname(file))).catch(() => undefined);
    }
    await fs.rm(shortRunDir(stateDir), { recursive: true, force: true });
    await fs.rm(stateDir, { recursive: true, force: true });
  });

  it("lists a node's sandbox with no directory as local, and removing it leaves no sandbox", async (t) => {
    if (!isolates) return t.skip("this host's isolation runtime makes no sandboxes");
    await runtime.ensureSandbox("cellar-verify-other1", { memoryBytes: 64 * 1024 * 1024 });
    const local = await driver.listLocal();
    assert.deepEqual(local, ["inst-orphan1"], "a backup verification's sandbox is not an instance");
    await driver.remove("inst-orphan1");
    assert.deepEqual(await runtime.listSandboxes(), ["cellar-verify-other1"]);
    assert.deepEqual(await driver.listLocal(), []);
  });
});
