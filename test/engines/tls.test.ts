import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import tls from "node:tls";
import {
  type CertificateAuthority,
  ensureCa,
  issueClientCert,
  issueServerCert,
} from "../../src/engines/tls/certificates.ts";
import { freePort, loopbackPrefix, scratchDir } from "./engine-fixtures.ts";

/** A TLS 1.3 server with the issued pair; resolves once listening. */
async function tlsServer(dir: string, host: string, port: number): Promise<tls.Server> {
  const server = tls.createServer({
    cert: await fs.readFile(path.join(dir, "server.crt")),
    key: await fs.readFile(path.join(dir, "server.key")),
    minVersion: "TLSv1.3",
  });
  server.on("secureConnection", (s) => s.end("hello"));
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  return server;
}

/** Connects like libpq's verify-full: CA check plus the dialled name against the SANs. */
function verifyFull(ca: string, host: string, port: number, servername?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const name = servername ? { servername } : {};
    const socket = tls.connect({ host, port, ca, rejectUnauthorized: true, minVersion: "TLSv1.3", ...name });
    socket.once("secureConnect", () => {
      const protocol = socket.getProtocol() ?? "";
      socket.destroy();
      resolve(protocol);
    });
    socket.once("error", reject);
  });
}

describe("Cellar CA and certificates", () => {
  let dir: string;
  let ca: CertificateAuthority;
  const net = loopbackPrefix();
  const servers: tls.Server[] = [];

  before(async () => {
    dir = await scratchDir("tls");
    ca = await ensureCa(path.join(dir, "ca"), "osc-fr1");
  });
  after(async () => {
    for (const s of servers) await new Promise((r) => s.close(r));
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("creates the CA once, key 0600, and returns the same one afterwards", async () => {
    const again = await ensureCa(path.join(dir, "ca"), "osc-fr1");
    assert.equal(again.certPem, ca.certPem);
    assert.equal((await fs.stat(ca.keyFile)).mode & 0o777, 0o600);
    const cert = new X509Certificate(ca.certPem);
    assert.ok(cert.ca);
    assert.match(cert.subject, /CN=Cellar osc-fr1 CA/);
  });

  it("issues a one-year server certificate that passes verify-full by IP and DNS name", async () => {
    const out = path.join(dir, "server");
    const issued = await issueServerCert(
      ca,
      { commonName: "inst-1", dnsNames: ["localhost"], ipAddresses: [`${net}.1`] },
      out,
    );
    assert.equal(issued.changed, true);
    assert.equal((await fs.stat(issued.keyFile)).mode & 0o777, 0o600);
    const cert = new X509Certificate(await fs.readFile(issued.certFile));
    const days = (new Date(cert.validTo).getTime() - new Date(cert.validFrom).getTime()) / 86_400_000;
    assert.equal(Math.round(days), 365);
    assert.ok(cert.checkIssued(new X509Certificate(ca.certPem)));
    assert.equal(await fs.readFile(issued.caFile, "utf8"), ca.certPem);

    const port = await freePort(`${net}.1`);
    servers.push(await tlsServer(out, `${net}.1`, port));
    assert.equal(await verifyFull(ca.certPem, `${net}.1`, port), "TLSv1.3");
    assert.equal(await verifyFull(ca.certPem, `${net}.1`, port, "localhost"), "TLSv1.3");
  });

  it("fails verify-full for an address the certificate does not name, or another CA", async () => {
    const out = path.join(dir, "server");
    const port = await freePort(`${net}.2`);
    servers.push(await tlsServer(out, `${net}.2`, port));
    await assert.rejects(
      verifyFull(ca.certPem, `${net}.2`, port),
      /ERR_TLS_CERT_ALTNAME_INVALID|does not match/,
    );
    const other = await ensureCa(path.join(dir, "other-ca"), "osc-fr1");
    const port1 = await freePort(`${net}.1`);
    servers.push(await tlsServer(out, `${net}.1`, port1));
    await assert.rejects(
      verifyFull(other.certPem, `${net}.1`, port1),
      /unable to verify|self.signed|UNABLE_TO/i,
    );
  });

  it("keeps a current certificate and reissues when the names change", async () => {
    const out = path.join(dir, "server");
    const names = { commonName: "inst-1", dnsNames: ["localhost"], ipAddresses: [`${net}.1`] };
    const before = await fs.readFile(path.join(out, "server.crt"), "utf8");
    assert.equal((await issueServerCert(ca, names, out)).changed, false);
    assert.equal(await fs.readFile(path.join(out, "server.crt"), "utf8"), before);
    const changed = await issueServerCert(ca, { ...names, ipAddresses: [`${net}.1`, `${net}.3`] }, out);
    assert.equal(changed.changed, true);
    const cert = new X509Certificate(await fs.readFile(changed.certFile));
    assert.match(cert.subjectAltName ?? "", new RegExp(`IP Address:${net.replace(/\./g, "\\.")}\\.3`));
  });

  it("reissues a pair whose key does not match its certificate (crash between the two writes)", async () => {
    const out = path.join(dir, "server");
    const names = { commonName: "inst-1", dnsNames: ["localhost"], ipAddresses: [`${net}.1`, `${net}.3`] };
    await fs.copyFile(path.join(dir, "ca", "ca.key"), path.join(out, "server.key"));
    assert.equal((await issueServerCert(ca, names, out)).changed, true);
  });

  it("issues client certificates for clientAuth with the user as CN", async () => {
    const issued = await issueClientCert(ca, { commonName: "replicator" }, path.join(dir, "client"));
    const cert = new X509Certificate(await fs.readFile(issued.certFile));
    assert.match(cert.subject, /CN=replicator/);
    assert.ok(cert.keyUsage?.includes("1.3.6.1.5.5.7.3.2"), "extended key usage clientAuth");
    assert.equal(cert.subjectAltName, undefined);
  });

  it("refuses names that are not plain host names or addresses", async () => {
    await assert.rejects(
      issueServerCert(ca, { commonName: "x\n[ext]" }, path.join(dir, "bad")),
      /common_name/,
    );
    await assert.rejects(
      issueServerCert(ca, { commonName: "x", ipAddresses: ["999.1.1.1"] }, path.join(dir, "bad")),
      /ip_addresses/,
    );
    await assert.rejects(
      issueServerCert(ca, { commonName: "x", dnsNames: ["a b"] }, path.join(dir, "bad")),
      /dns_names/,
    );
  });
});
