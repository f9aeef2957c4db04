// A small client for etcd's v3 JSON gateway over mutual TLS: what Cellar needs to manage the
// region's DCS (users and roles per HA cluster, cleanup) and to hand a dead leader's key back.
// Keys and values travel base64-encoded, as the gateway wants.
import https from "node:https";

export interface EtcdTls {
  caPem: string;
  certPem: string;
  keyPem: string;
}

export interface EtcdClientOptions {
  /** e.g. ["https://127.20.0.1:2379"]; tried in order. */
  endpoints: string[];
  tls: EtcdTls;
  auth?: { user: string; password: string };
  timeoutMs?: number;
}

export class EtcdError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly etcdMessage: string,
  ) {
    super(message);
  }
}

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64");
const unb64 = (s: string | undefined) => (s ? Buffer.from(s, "base64").toString("utf8") : "");

/** The end of a prefix range: the prefix with its last byte incremented. */
export function prefixEnd(prefix: string): string {
  const buf = Buffer.from(prefix, "utf8");
  for (let i = buf.length - 1; i >= 0; i--) {
    if (buf[i]! < 0xff) {
      buf[i] = buf[i]! + 1;
      return buf.subarray(0, i + 1).toString("base64");
    }
  }
  return b64("\0");
}

export class EtcdClient {
  private token: string | null = null;

  constructor(private readonly opts: EtcdClientOptions) {}

  /** POST to one gateway path, on the first endpoint that answers. */
  async call<T = Record<string, unknown>>(path: string, body: object, retryAuth = true): Promise<T> {
    if (this.opts.auth && !this.token && path !== "/v3/auth/authenticate") await this.authenticate();
    let lastError: Error | null = null;
    for (const endpoint of this.opts.endpoints) {
      try {
        return await this.post<T>(endpoint, path, body);
      } catch (err) {
        if (err instanceof EtcdError) {
          // Tokens expire (and die with a member restart): authenticate again once.
          if (retryAuth && this.opts.auth && /token/i.test(err.etcdMessage)) {
            this.token = null;
            return this.call<T>(path, body, false);
          }
          throw err;
        }
        lastError = err as Error;
      }
    }
    throw lastError ?? new Error("no etcd endpoint given");
  }

  private async authenticate(): Promise<void> {
    const { user, password } = this.opts.auth!;
    const res = await this.call<{ token?: string }>("/v3/auth/authenticate", { name: user, password });
    if (!res.token) throw new EtcdError(`etcd gave no token to ${user}`, 0, "");
    this.token = res.token;
  }

  private post<T>(endpoint: string, path: string, body: object): Promise<T> {
    const payload = JSON.stringify(body);
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (this.token && path !== "/v3/auth/authenticate") headers.authorization = this.token;
    const { caPem, certPem, keyPem } = this.opts.tls;
    return new Promise<T>((resolve, reject) => {
      const req = https.request(
        new URL(path, endpoint),
        {
          method: "POST",
          headers,
          ca: caPem,
          cert: certPem,
          key: keyPem,
          timeout: this.opts.timeoutMs ?? 5000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            let parsed: Record<string, unknown> = {};
            try {
              parsed = JSON.parse(text) as Record<string, unknown>;
            } catch {
              parsed = { message: text };
            }
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300 && parsed.error === undefined) return resolve(parsed as T);
            const detail = parsed.message ?? parsed.error;
            const message = typeof detail === "string" ? detail : text;
            reject(new EtcdError(`etcd ${path}: ${status} ${message}`, status, message));
          });
        },
      );
      req.on("timeout", () => req.destroy(new Error(`etcd ${endpoint}${path}: timed out`)));
      req.on("error", reject);
      req.end(payload);
    });
  }

  async get(key: string): Promise<string | null> {
    const res = await this.call<{ kvs?: Array<{ value?: string }> }>("/v3/kv/range", { key: b64(key) });
    return res.kvs?.[0] ? unb64(res.kvs[0].value) : null;
  }

  async put(key: string, value: string): Promise<void> {
    await this.call("/v3/kv/put", { key: b64(key), value: b64(value) });
  }

  async deletePrefix(prefix: string): Promise<void> {
    await this.call("/v3/kv/deleterange", { key: b64(prefix), range_end: prefixEnd(prefix) });
  }

  /** Deletes `key` only while it holds `value`; true when it did. */
  async deleteIfValue(key: string, value: string): Promise<boolean> {
    const res = await this.call<{ succeeded?: boolean }>("/v3/kv/txn", {
      compare: [{ key: b64(key), target: "VALUE", result: "EQUAL", value: b64(value) }],
      success: [{ request_delete_range: { key: b64(key) } }],
    });
    return res.succeeded === true;
  }

  // Authentication and authorisation. "Already there" answers are success: each call is idempotent.

  async addUser(name: string, password: string): Promise<void> {
    await this.idempotent(this.call("/v3/auth/user/add", { name, password }), /already exists/);
  }

  async setPassword(name: string, password: string): Promise<void> {
    await this.call("/v3/auth/user/changepw", { name, password });
  }

  async deleteUser(name: string): Promise<void> {
    await this.idempotent(this.call("/v3/auth/user/delete", { name }), /not found/);
  }

  async addRole(name: string): Promise<void> {
    await this.idempotent(this.call("/v3/auth/role/add", { name }), /already exists/);
  }

  async deleteRole(name: string): Promise<void> {
    await this.idempotent(this.call("/v3/auth/role/delete", { role: name }), /not found/);
  }

  /** Read and write on every key under `prefix`, and nothing else. */
  async grantPrefix(role: string, prefix: string): Promise<void> {
    await this.call("/v3/auth/role/grant", {
      name: role,
      perm: { permType: "READWRITE", key: b64(prefix), range_end: prefixEnd(prefix) },
    });
  }

  async grantRole(user: string, role: string): Promise<void> {
    await this.call("/v3/auth/user/grant", { user, role });
  }

  async enableAuth(): Promise<void> {
    await this.idempotent(this.call("/v3/auth/enable", {}), /already enabled/);
  }

  private async idempotent(p: Promise<unknown>, ok: RegExp): Promise<void> {
    try {
      await p;
    } catch (err) {
      if (!(err instanceof EtcdError && ok.test(err.etcdMessage))) throw err;
    }
  }
}

/** GET /health of one member over mutual TLS: true when it says so. */
export function memberHealthy(endpoint: string, tls: EtcdTls, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const req = https.get(
      new URL("/health", endpoint),
      { ca: tls.caPem, cert: tls.certPem, key: tls.keyPem, timeout: timeoutMs },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve(/"health"\s*:\s*"true"/.test(Buffer.concat(chunks).toString("utf8"))));
      },
    );
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(false));
  });
}
