// A per-region Cellar CA and the certificates it issues: server certificates for
// PostgreSQL (verify-full by DNS name or IP) and client certificates (replication, later).
// Keys are ECDSA P-256, made by Node; signing goes through the openssl CLI.
import { generateKeyPairSync, X509Certificate, createPrivateKey } from "node:crypto";
import fs from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { ValidationError } from "../../domain/errors.ts";
import { ensureDir, type OsUser, writeFileAtomic } from "../postgresql/command.ts";
import { opensslWithConfig } from "./openssl.ts";

export interface CertificateAuthority {
  regionName: string;
  certFile: string;
  keyFile: string;
  /** The CA certificate clients download to verify servers (sslrootcert). */
  certPem: string;
}

export interface CertificateNames {
  commonName: string;
  /**
   * Put the name in OU instead of CN. etcd refuses a client certificate with a CN on its JSON
   * gateway once authentication is on (it would be taken for the user): its clients use these.
   */
  nameInOu?: boolean;
  dnsNames?: string[];
  ipAddresses?: string[];
}

export interface IssuedCertificate {
  certFile: string;
  keyFile: string;
  /** A copy of the CA certificate next to the pair (ssl_ca_file, sslrootcert). */
  caFile: string;
  /** False when a valid certificate with the same names was already there. */
  changed: boolean;
}

export interface IssueOptions {
  /** Owner of the written files (the postgres OS user for a server's key). */
  owner?: OsUser | undefined;
}

export type CertificateKind = "server" | "client" | "peer";
const EXTENDED_KEY_USAGE: Record<CertificateKind, string> = {
  server: "serverAuth",
  client: "clientAuth",
  peer: "serverAuth, clientAuth",
};

const CA_DAYS = 3650;
const LEAF_DAYS = 365;
/** Reissue a leaf certificate when it has less than this left. */
const RENEW_BEFORE_MS = 30 * 24 * 3600 * 1000;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const DNS_NAME =
  /^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

function newKeyPem(): string {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return privateKey.export({ type: "pkcs8", format: "pem" }).toString();
}

// Names end up inside an openssl config file: only plain characters may get there.
function checkNames(names: CertificateNames): void {
  if (!NAME.test(names.commonName)) {
    throw ValidationError.field("common_name", "must be 1-63 letters, digits, '.', '_' or '-'");
  }
  for (const dns of names.dnsNames ?? []) {
    if (!DNS_NAME.test(dns)) throw ValidationError.field("dns_names", `"${dns}" is not a DNS name`);
  }
  for (const ip of names.ipAddresses ?? []) {
    if (net.isIP(ip) === 0) throw ValidationError.field("ip_addresses", `"${ip}" is not an IP address`);
  }
}

function reqConfig(subject: Record<string, string>, extensions: string[]): string {
  const dn = Object.entries(subject).map(([k, v]) => `${k} = ${v}`);
  return ["[req]", "distinguished_name = dn", "prompt = no", "[dn]", ...dn, "[ext]", ...extensions, ""].join(
    "\n",
  );
}

async function loadCa(dir: string, regionName: string): Promise<CertificateAuthority | null> {
  const certFile = path.join(dir, "ca.crt");
  const keyFile = path.join(dir, "ca.key");
  const [certPem, keyPem] = await Promise.all([
    fs.readFile(certFile, "utf8").catch(() => null),
    fs.readFile(keyFile, "utf8").catch(() => null),
  ]);
  if (certPem === null || keyPem === null) return null;
  // A crash between writing the key and the certificate leaves a pair that does not match.
  if (!new X509Certificate(certPem).checkPrivateKey(createPrivateKey(keyPem))) return null;
  return { regionName, certFile, keyFile, certPem };
}

/** The region's CA under `dir` (ca.key 0600, ca.crt), made on first call. */
export async function ensureCa(dir: string, regionName: string): Promise<CertificateAuthority> {
  if (!/^[a-z0-9][a-z0-9-]{0,40}$/.test(regionName)) {
    throw ValidationError.field("region", "must be lowercase letters, digits and '-'");
  }
  const existing = await loadCa(dir, regionName);
  if (existing) return existing;
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const keyFile = path.join(dir, "ca.key");
  // Link, not rename: when two processes race, the first key wins and both sign with it.
  const tmpKey = `${keyFile}.tmp-${process.pid}`;
  await fs.writeFile(tmpKey, newKeyPem(), { mode: 0o600 });
  await fs.link(tmpKey, keyFile).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== "EEXIST") throw err;
  });
  await fs.rm(tmpKey, { force: true });
  await fs.chmod(keyFile, 0o600);
  const config = reqConfig({ O: "Cellar", CN: `Cellar ${regionName} CA` }, [
    "basicConstraints = critical, CA:TRUE, pathlen:0",
    "keyUsage = critical, keyCertSign, cRLSign",
    "subjectKeyIdentifier = hash",
  ]);
  const certPem = await opensslWithConfig(
    ["req", "-new", "-x509", "-extensions", "ext", "-key", keyFile, "-days", String(CA_DAYS), "-sha256"],
    config,
    dir,
  );
  await writeFileAtomic(path.join(dir, "ca.crt"), certPem, 0o644, undefined);
  const ca = await loadCa(dir, regionName);
  if (!ca) throw new Error(`CA in ${dir} is inconsistent after creation`);
  return ca;
}

function sanText(names: CertificateNames): string[] {
  return [
    ...(names.dnsNames ?? []).map((d) => `DNS:${d}`),
    ...(names.ipAddresses ?? []).map((ip) => `IP Address:${ip}`),
  ];
}

/** Is the pair in outDir issued by `ca`, for exactly these names, with its key, and not near expiry? */
async function isCurrent(
  ca: CertificateAuthority,
  names: CertificateNames,
  certFile: string,
  keyFile: string,
) {
  const [certPem, keyPem] = await Promise.all([
    fs.readFile(certFile, "utf8").catch(() => null),
    fs.readFile(keyFile, "utf8").catch(() => null),
  ]);
  if (certPem === null || keyPem === null) return false;
  const cert = new X509Certificate(certPem);
  const caCert = new X509Certificate(ca.certPem);
  const sans = (cert.subjectAltName ?? "").split(", ").filter(Boolean).sort();
  return (
    cert.verify(caCert.publicKey) &&
    cert.checkPrivateKey(createPrivateKey(keyPem)) &&
    cert.subject.split("\n").includes(`${names.nameInOu ? "OU" : "CN"}=${names.commonName}`) &&
    (names.nameInOu ? !/^CN=/m.test(cert.subject) : true) &&
    JSON.stringify(sans) === JSON.stringify(sanText(names).sort()) &&
    new Date(cert.validTo).getTime() - Date.now() > RENEW_BEFORE_MS
  );
}

async function issue(
  ca: CertificateAuthority,
  names: CertificateNames,
  outDir: string,
  kind: CertificateKind,
  opts: IssueOptions,
): Promise<IssuedCertificate> {
  checkNames(names);
  const certFile = path.join(outDir, `${kind}.crt`);
  const keyFile = path.join(outDir, `${kind}.key`);
  const caFile = path.join(outDir, "ca.crt");
  await ensureDir(outDir, 0o700, opts.owner);
  const caChanged = await writeFileAtomic(caFile, ca.certPem, 0o644, opts.owner);
  if (await isCurrent(ca, names, certFile, keyFile)) return { certFile, keyFile, caFile, changed: caChanged };

  const extensions = [
    "basicConstraints = critical, CA:FALSE",
    "keyUsage = critical, digitalSignature",
    `extendedKeyUsage = ${EXTENDED_KEY_USAGE[kind]}`,
    "subjectKeyIdentifier = hash",
    "authorityKeyIdentifier = keyid",
  ];
  const sans = sanText(names).map((s) => s.replace("IP Address:", "IP:"));
  if (sans.length > 0) extensions.push(`subjectAltName = ${sans.join(", ")}`);
  const subject = names.nameInOu
    ? { O: "Cellar", OU: names.commonName }
    : { O: "Cellar", CN: names.commonName };
  const config = reqConfig(subject, extensions);
  // The new key is written before the certificate: a crash in between leaves a mismatched
  // pair, which isCurrent rejects, so the next call simply issues again.
  await writeFileAtomic(keyFile, newKeyPem(), 0o600, opts.owner);
  const certPem = await opensslWithConfig(
    [
      "req",
      "-new",
      "-x509",
      "-extensions",
      "ext",
      "-key",
      keyFile,
      "-CA",
      ca.certFile,
      "-CAkey",
      ca.keyFile,
      "-days",
      String(LEAF_DAYS),
      "-sha256",
    ],
    config,
    outDir,
  );
  await writeFileAtomic(certFile, certPem, 0o644, opts.owner);
  return { certFile, keyFile, caFile, changed: true };
}

/** A server certificate for `names` in outDir (server.crt, server.key 0600, ca.crt); idempotent. */
export function issueServerCert(
  ca: CertificateAuthority,
  names: CertificateNames,
  outDir: string,
  opts: IssueOptions = {},
): Promise<IssuedCertificate> {
  return issue(ca, names, outDir, "server", opts);
}

/** A certificate for both ends of a connection (etcd members talk to each other): peer.crt, peer.key. */
export function issuePeerCert(
  ca: CertificateAuthority,
  names: CertificateNames,
  outDir: string,
  opts: IssueOptions = {},
): Promise<IssuedCertificate> {
  return issue(ca, names, outDir, "peer", opts);
}

/** A client certificate whose CN is the database user it authenticates (client.crt, client.key). */
export function issueClientCert(
  ca: CertificateAuthority,
  names: CertificateNames,
  outDir: string,
  opts: IssueOptions = {},
): Promise<IssuedCertificate> {
  return issue(ca, names, outDir, "client", opts);
}
