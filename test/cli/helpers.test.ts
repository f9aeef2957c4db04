import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { withVerifiedTls } from "../../src/cli/console.cmd.ts";
import { describeApiError } from "../../src/cli/http.ts";
import { table } from "../../src/cli/output.ts";
import { jwtExp, normaliseApiUrl } from "../../src/cli/session.ts";
import { parseDuration, waitFor } from "../../src/cli/wait.ts";

describe("CLI helpers", () => {
  it("turns the reference's error shapes into lines", () => {
    const cases: [number, unknown, string][] = [
      [
        422,
        { errors: { name: ["is already taken"], plan_id: ["is unknown", "is disabled"] } },
        "name: is already taken\nplan_id: is unknown\nplan_id: is disabled",
      ],
      [404, { resource: "app", error: "not found" }, "app not found"],
      [404, { error: "no route for GET /x" }, "this API does not offer that yet (no route for GET /x)"],
      [404, null, "resource not found"],
      [401, { error: "invalid API token" }, 'invalid API token\nrun "cellar login" to log in again'],
      [409, { error: "app still has add-ons" }, "app still has add-ons"],
      [502, "<html>bad gateway</html>", "HTTP 502: <html>bad gateway</html>"],
    ];
    for (const [status, body, expected] of cases) assert.equal(describeApiError(status, body), expected);
  });

  it("aligns table columns and shows empty cells as -", () => {
    assert.equal(
      table(
        ["NAME", "PLAN"],
        [
          ["a-long-name", "x"],
          ["b", null],
        ],
      ),
      "NAME         PLAN\na-long-name  x\nb            -",
    );
  });

  it("switches a URL to verified TLS with the CA, keeping its other parameters", () => {
    assert.equal(
      withVerifiedTls(
        "postgresql://u:p@127.0.0.1:5432/db?sslmode=prefer&application_name=x",
        "/tmp/my ca.pem",
      ),
      "postgresql://u:p@127.0.0.1:5432/db?application_name=x&sslmode=verify-full&sslrootcert=%2Ftmp%2Fmy%20ca.pem",
    );
    assert.equal(
      withVerifiedTls("postgresql://h/db", "/c.pem"),
      "postgresql://h/db?sslmode=verify-full&sslrootcert=%2Fc.pem",
    );
  });

  it("reads durations, API URLs and JWT expiry", () => {
    assert.equal(parseDuration("2s"), 2000);
    assert.equal(parseDuration("10m"), 600_000);
    assert.equal(parseDuration("90"), 90_000);
    assert.throws(() => parseDuration("soon"), /not a duration/);
    assert.equal(normaliseApiUrl("http://127.0.0.1:5080/v1/"), "http://127.0.0.1:5080");
    assert.equal(
      normaliseApiUrl("https://cellar.example.com/regions/osc-fr1"),
      "https://cellar.example.com/regions/osc-fr1",
    );
    assert.throws(() => normaliseApiUrl("ftp://x"), /only http and https/);
    const payload = Buffer.from(JSON.stringify({ exp: 1234 })).toString("base64url");
    assert.equal(jwtExp(`h.${payload}.s`), 1234);
    assert.equal(jwtExp("garbage"), null);
  });

  it("waits with one line per change and stops on failure", async () => {
    const lines: string[] = [];
    const states = [{ state: "creating" }, { state: "creating" }, { state: "failed", failed: "disk full" }];
    let i = 0;
    await assert.rejects(
      waitFor({
        label: "db-1 to be running",
        timeoutMs: 5000,
        intervalMs: 1,
        observe: () => Promise.resolve({ done: false, ...states[Math.min(i++, 2)]! }),
        note: (l) => lines.push(l),
      }),
      /db-1 to be running failed: disk full/,
    );
    assert.equal(lines.length, 3, lines.join("\n"));
    assert.match(lines[1]!, /^\[\s+0s\] creating$/);
  });
});
