// Patroni's launcher: it starts the installed Patroni, and the timing it changes exists in
// that Patroni (otherwise the switchover pause grows back by half a second, silently).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { describe, it } from "node:test";
import { promisify } from "node:util";
import { PATRONI_ARGV } from "../../src/engines/postgresql/patroni-node.ts";

const run = promisify(execFile);

describe("Patroni launcher", () => {
  it("starts the installed Patroni", async () => {
    const [bin, ...args] = PATRONI_ARGV;
    const { stdout } = await run(bin!, [...args, "--version"]);
    assert.match(stdout, /^patroni \d+\.\d+\.\d+/);
  });

  it("finds the stop polling interval it shortens in the installed Patroni", async () => {
    const { stdout } = await run("/usr/bin/python3", [
      "-c",
      "import patroni.postgresql as pg; print(pg.STOP_POLLING_INTERVAL)",
    ]);
    assert.equal(Number(stdout.trim()), 1, "Patroni's own value, which the launcher lowers to 0.1");
  });
});
