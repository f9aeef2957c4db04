// The agent's client for the controller's agent API (HTTPS, pinned to Cellar's CA).
import http from "node:http";
import https from "node:https";

export interface ControllerClientOptions {
  /** e.g. https://127.0.0.1:5443/agent/v1 */
  url: string;
  /** PEM of the CA that signed the controller's agent-listener certificate. */
  ca?: string;
}

export class ControllerError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

class StaleSocketError extends Error {}

export class ControllerClient {
  private token: string | null = null;
  constructor(private readonly opts: ControllerClientOptions) {}

  setToken(token: string): void {
    this.token = token;
  }

  async request<T>(method: string, path: string, body?: unknown, timeoutMs = 40_000): Promise<T> {
    try {
      return await this.once<T>(method, path, body, timeoutMs);
    } catch (err) {
      // A kept-alive socket the listener closed just as it was reused: the request never
      // reached it, so sending it once more on a fresh socket is safe.
      if (!(err instanceof StaleSocketError)) throw err;
      return this.once<T>(method, path, body, timeoutMs);
    }
  }

  private once<T>(method: string, path: string, body: unknown, timeoutMs: number): Promise<T> {
    const url = new URL(this.opts.url.replace(/\/$/, "") + path);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = { accept: "application/json" };
    if (payload !== undefined) headers["content-type"] = "application/json";
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const lib = url.protocol === "https:" ? https : http;
    return new Promise<T>((resolve, reject) => {
      const req = lib.request(
        url,
        { method, headers, timeout: timeoutMs, ...(this.opts.ca ? { ca: this.opts.ca } : {}) },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            const status = res.statusCode ?? 0;
            let parsed: unknown = null;
            try {
              parsed = text ? JSON.parse(text) : null;
            } catch {
              parsed = text;
            }
            if (status >= 200 && status < 300) resolve(parsed as T);
            else reject(new ControllerError(status, `${method} ${path}: ${status} ${text.slice(0, 300)}`));
          });
        },
      );
      req.on("timeout", () => req.destroy(new Error(`${method} ${path}: timed out`)));
      req.on("error", (err: NodeJS.ErrnoException) => {
        const stale = req.reusedSocket && err.code === "ECONNRESET";
        reject(stale ? new StaleSocketError(err.message) : err);
      });
      req.end(payload);
    });
  }
}
