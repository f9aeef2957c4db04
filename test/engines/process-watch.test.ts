import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { after, describe, it } from "node:test";
import { findProcesses, isProcessAlive, livePidsTitled } from "../../src/engines/postgresql/process-watch.ts";

// A process that idles with a marker among its arguments.
const BIN = process.execPath;
const IDLE = "setTimeout(() => {}, 30000)";

describe("process watch", () => {
  const children: ChildProcess[] = [];
  const sleeper = (marker: string) => {
    const child = spawn(BIN, ["-e", IDLE, marker], { stdio: "ignore" });
    children.push(child);
    return child;
  };

  after(() => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  });

  it("finds a process by binary and argument, from many concurrent callers", async () => {
    const marker = `cellar-${randomBytes(6).toString("hex")}`;
    const child = sleeper(marker);
    const found = await Promise.all(Array.from({ length: 30 }, () => findProcesses(BIN, marker)));
    for (const pids of found) assert.deepEqual(pids, [child.pid]);
    assert.deepEqual(await findProcesses(BIN, "no-such-argument"), []);
    assert.ok((await livePidsTitled(BIN)).includes(child.pid!));
  });

  it("a caller never gets a scan that started before its call", async () => {
    // Calls while a scan runs: a process started after the first call must be seen by the
    // calls made after it started.
    const marker = `cellar-${randomBytes(6).toString("hex")}`;
    const early = findProcesses(BIN, marker);
    const child = sleeper(marker);
    const late = await Promise.all(Array.from({ length: 10 }, () => findProcesses(BIN, marker)));
    for (const pids of late) assert.deepEqual(pids, [child.pid]);
    await early; // may or may not have seen it: it began before the spawn
  });

  it("does not report a process once it has exited", async () => {
    const marker = `cellar-${randomBytes(6).toString("hex")}`;
    const child = sleeper(marker);
    assert.deepEqual(await findProcesses(BIN, marker), [child.pid]);
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
    assert.equal(await isProcessAlive(child.pid!), false);
    assert.deepEqual(await findProcesses(BIN, marker), []);
  });
});
