// The controller's certificate authorities: one per region (database servers, downloadable
// by clients) and one internal (the agent listener). Their keys live in the store, so every
// controller of a deployment signs with the same CA; each keeps a file copy for openssl.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import {
  ensureCa,
  issueClientCert,
  issuePeerCert,
  issueServerCert,
  type CertificateAuthority,
  type CertificateKind,
  type CertificateNames,
} from "./certificates.ts";
import type { Queryable } from "../../store/db.ts";

export const INTERNAL_CA = "cellar-internal";

export interface PemPair {
  certPem: string;
  keyPem: string;
  caPem: string;
}

export interface Pki {
  ca(name: string): CertificateAuthority;
  /** Issues a fresh server certificate (PEMs in memory; nothing stays on disk). */
  issueServer(caName: string, names: CertificateNames): Promise<PemPair>;
  /** The same for a client or peer (client and server) certificate. */
  issue(caName: string, names: CertificateNames, kind: CertificateKind): Promise<PemPair>;
}

/** Loads the CA `name` from the store, or creates it and stores it (first writer wins). */
async function syncCa(q: Queryable, dir: string, name: string): Promise<CertificateAuthority> {
  const keyKey = `pki:${name}:key`;
  const certKey = `pki:${name}:cert`;
  const { rows } = await q.query<{ key: string; value: string }>(
    "SELECT key, value FROM settings WHERE key = ANY($1)",
    [[keyKey, certKey]],
  );
  const stored = new Map(rows.map((r) => [r.key, r.value]));
  const caDir = path.join(dir, name);
  if (stored.has(keyKey) && stored.has(certKey)) {
    await fs.mkdir(caDir, { recursive: true, mode: 0o700 });
    await fs.writeFile(path.join(caDir, "ca.key"), stored.get(keyKey)!, { mode: 0o600 });
    await fs.writeFile(path.join(caDir, "ca.crt"), stored.get(certKey)!, { mode: 0o644 });
    return ensureCa(caDir, name);
  }
  const ca = await ensureCa(caDir, name);
  const keyPem = await fs.readFile(ca.keyFile, "utf8");
  await q.query("INSERT INTO settings (key, value) VALUES ($1, $2), ($3, $4) ON CONFLICT (key) DO NOTHING", [
    keyKey,
    keyPem,
    certKey,
    ca.certPem,
  ]);
  // Another controller may have stored its CA first: converge on the stored one.
  const { rows: after } = await q.query<{ value: string }>("SELECT value FROM settings WHERE key = $1", [
    certKey,
  ]);
  if (after[0]?.value !== ca.certPem) return syncCa(q, dir, name);
  return ca;
}

export async function loadPki(q: Queryable, dir: string, regions: string[]): Promise<Pki> {
  const cas = new Map<string, CertificateAuthority>();
  for (const name of [INTERNAL_CA, ...regions]) cas.set(name, await syncCa(q, dir, name));
  const ca = (name: string) => {
    const found = cas.get(name);
    if (!found) throw new Error(`no certificate authority for ${name}`);
    return found;
  };
  const issuers = { server: issueServerCert, client: issueClientCert, peer: issuePeerCert };
  const issue = async (caName: string, names: CertificateNames, kind: CertificateKind) => {
    const authority = ca(caName);
    const tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-cert-"));
    try {
      const issued = await issuers[kind](authority, names, tmp);
      const [certPem, keyPem] = await Promise.all([
        fs.readFile(issued.certFile, "utf8"),
        fs.readFile(issued.keyFile, "utf8"),
      ]);
      return { certPem, keyPem, caPem: authority.certPem };
    } finally {
      await fs.rm(tmp, { recursive: true, force: true });
    }
  };
  return { ca, issue, issueServer: (caName, names) => issue(caName, names, "server") };
}
