// A real S3-compatible server for tests (s3rver, files under a scratch dir) over TLS with a CA
// of our own, as pgBackRest needs: it always speaks HTTPS and checks the certificate's DNS name
// (it ignores IP SANs), so the endpoint is "localhost" with a certificate naming it.
import fs from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import type { S3RepoSpec } from "../../src/engines/postgresql/backup/types.ts";
import { ensureCa, issueServerCert } from "../../src/engines/tls/certificates.ts";

interface S3rverOptions {
  address: string;
  port: number;
  silent: boolean;
  directory: string;
  key: Buffer;
  cert: Buffer;
  configureBuckets: Array<{ name: string }>;
}
interface S3rverInstance {
  run(): Promise<{ port: number }>;
  close(): Promise<void>;
}
// s3rver ships no types: only what the tests call is described.
const S3rver = createRequire(import.meta.url)("s3rver") as new (opts: S3rverOptions) => S3rverInstance;

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
  const server = new S3rver({
    address: "127.0.0.1",
    port: 0,
    silent: true,
    directory: dataDir,
    key: await fs.readFile(cert.keyFile),
    cert: await fs.readFile(cert.certFile),
    configureBuckets: [{ name: bucket }],
  });
  const { port } = await server.run();
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
    stop: () => server.close(),
  };
}
