// A real S3-compatible server for tests (s3rver, files under a scratch dir) over TLS with a CA
// of our own, as pgBackRest needs: it always speaks HTTPS and checks the certificate's DNS name
// (it ignores IP SANs), so the endpoint is "localhost" with a certificate naming it.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { REPO_ROOT } from "../../src/config.ts";
import type { S3RepoSpec } from "../../src/engines/postgresql/backup/types.ts";
import { ensureCa, issueServerCert } from "../../src/engines/tls/certificates.ts";

/**
 * The server, in a child process of its own: s3rver 3.7 makes the continuation tokens of long
 * listings with DES, which Node's OpenSSL 3 has only in its legacy provider (without it, any
 * listing of more than 1000 keys fails, e.g. a stanza-delete). It exits when its stdin closes.
 */
const SERVER_SCRIPT = `
const S3rver = require("s3rver");
const fs = require("node:fs");
const o = JSON.parse(process.argv[1]);
const server = new S3rver({
  address: "127.0.0.1", port: 0, silent: true, directory: o.directory,
  key: fs.readFileSync(o.keyFile), cert: fs.readFileSync(o.certFile),
  configureBuckets: [{ name: o.bucket }],
});
server.run().then((a) => process.stdout.write(JSON.stringify({ port: a.port }) + "\\n"));
process.stdin.on("end", () => server.close().then(() => process.exit(0)));
process.stdin.resume();
`;

const START_TIMEOUT_MS = 15_000;

function startServer(opts: object): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(
    process.execPath,
    ["--openssl-legacy-provider", "-e", SERVER_SCRIPT, JSON.stringify(opts)],
    {
      cwd: REPO_ROOT,
      stdio: ["pipe", "pipe", "inherit"],
    },
  );
  return new Promise((resolve, reject) => {
    let out = "";
    const fail = (why: string) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(new Error(`s3rver did not start: ${why}`));
    };
    const timer = setTimeout(() => fail(`no port within ${START_TIMEOUT_MS} ms`), START_TIMEOUT_MS);
    child.once("exit", (code) => fail(`exited with ${code}`));
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const line = out.split("\n")[0];
      if (!out.includes("\n") || !line) return;
      clearTimeout(timer);
      child.removeAllListeners("exit");
      resolve({ child, port: (JSON.parse(line) as { port: number }).port });
    });
  });
}

function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    child.stdin!.end();
    // A server that does not close by itself is killed: the test must not hang on it.
    setTimeout(() => child.kill("SIGKILL"), 5000).unref();
  });
}

/** s3rver's fixed credentials: it checks signatures against these. */
const ACCESS_KEY = "S3RVER";
const SECRET_KEY = "S3RVER";
const OBJECT_SUFFIX = "._S3rver_object";

export interface TestS3 {
  /** The repository settings of a spec for this server's bucket. */
  repo: S3RepoSpec;
  /** The CA file (readable by the postgres OS user). */
  caFile: string;
  /** Keys of the objects stored under `prefix` (read from s3rver's files). */
  keys(prefix: string): Promise<string[]>;
  /** The stored bytes of one object. */
  object(key: string): Promise<Buffer>;
  stop(): Promise<void>;
}

export async function startTestS3(dir: string, bucket = "cellar-backups"): Promise<TestS3> {
  const ca = await ensureCa(path.join(dir, "s3-ca"), "s3-test");
  const cert = await issueServerCert(
    ca,
    { commonName: "localhost", dnsNames: ["localhost"] },
    path.join(dir, "s3-tls"),
  );
  const caFile = path.join(dir, "s3-ca.crt");
  await fs.writeFile(caFile, ca.certPem, { mode: 0o644 });
  const dataDir = path.join(dir, "s3-data");
  const { child, port } = await startServer({
    directory: dataDir,
    keyFile: cert.keyFile,
    certFile: cert.certFile,
    bucket,
  });
  const bucketDir = path.join(dataDir, bucket);
  return {
    repo: {
      endpoint: "localhost",
      port,
      bucket,
      region: "us-east-1",
      uriStyle: "path",
      verifyTls: true,
      caFile,
      accessKey: ACCESS_KEY,
      secretKey: SECRET_KEY,
    },
    caFile,
    async keys(prefix) {
      const base = path.join(bucketDir, prefix.replace(/^\/+/, ""));
      const found = await fs.readdir(base, { recursive: true }).catch(() => [] as string[]);
      return found
        .filter((f) => f.endsWith(OBJECT_SUFFIX))
        .map((f) => path.posix.join(prefix, f.slice(0, -OBJECT_SUFFIX.length)))
        .sort();
    },
    object: (key) => fs.readFile(path.join(bucketDir, `${key.replace(/^\/+/, "")}${OBJECT_SUFFIX}`)),
    stop: () => stopServer(child),
  };
}
