import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RetryBackoff, retryDelayMs } from "../../src/agent/retry-backoff.ts";

describe("agent retry back-off", () => {
  const policy = { firstMs: 1000, maxMs: 60_000 };

  it("doubles from the first delay up to the ceiling", () => {
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6, 7, 8, 40].map((n) => retryDelayMs(policy, n)),
      [1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000, 60_000],
    );
  });

  it("holds a failed instance until its delay ends, then lets it try again", () => {
    let now = 0;
    const b = new RetryBackoff(policy, () => now);
    assert.equal(b.due("i", "1:running"), true);
    assert.deepEqual(b.failed("i", "1:running"), { failures: 1, delayMs: 1000 });
    assert.equal(b.due("i", "1:running"), false);
    assert.equal(b.waiting("i", "1:running"), true);
    assert.equal(b.nextDueInMs(), 1000);
    now = 999;
    assert.equal(b.due("i", "1:running"), false);
    now = 1000;
    assert.equal(b.due("i", "1:running"), true);
    assert.deepEqual(b.failed("i", "1:running"), { failures: 2, delayMs: 2000 });
    assert.equal(b.nextDueInMs(), 2000);
  });

  it("starts over on success, and at once when the controller asks something new", () => {
    const now = 0;
    const b = new RetryBackoff(policy, () => now);
    b.failed("i", "1:running");
    b.failed("i", "1:running");
    assert.equal(b.due("i", "2:running"), true, "a new spec generation is tried at once");
    assert.deepEqual(b.failed("i", "2:running"), { failures: 1, delayMs: 1000 });
    b.succeeded("i");
    assert.equal(b.waiting("i", "2:running"), false);
    assert.equal(b.nextDueInMs(), null);
    b.failed("j", "1:deleted");
    b.retain((id) => id !== "j");
    assert.equal(b.nextDueInMs(), null, "instances no longer asked for are forgotten");
  });
});
