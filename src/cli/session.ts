// The CLI's session: where credentials live, the token exchange and the cached bearer.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ClientEnv } from "../config.ts";
import { ApiError, CliError, isObject, request, type JsonObject, type Response } from "./http.ts";

export interface Credentials {
  api_url: string;
  token: string;
  bearer?: string;
  /** Unix seconds after which the cached bearer is no longer used. */
  bearer_refresh_at?: number;
}

/** Re-exchange this long before the bearer's `exp`, as the reference's client does. */
const REFRESH_MARGIN_S = 5 * 60;

export function configDirOf(flag: string | undefined, env: ClientEnv): string {
  if (flag) return path.resolve(flag);
  if (env.configDir) return path.resolve(env.configDir);
  const base = env.xdgConfigHome ?? path.join(os.homedir(), ".config");
  return path.join(base, "cellar");
}

export const credentialsFile = (configDir: string) => path.join(configDir, "credentials.json");

/** `http://host:port` from what the user typed, with or without a trailing `/v1`. */
export function normaliseApiUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new CliError(`--api-url ${raw} is not a URL: expected something like http://127.0.0.1:5080`);
  }
  if (!/^https?:$/.test(url.protocol)) throw new CliError(`--api-url ${raw}: only http and https URLs work`);
  return url.toString().replace(/\/+$/, "").replace(/\/v1$/, "");
}

export function readCredentials(configDir: string): Credentials | null {
  let text: string;
  try {
    text = fs.readFileSync(credentialsFile(configDir), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new CliError(`cannot read ${credentialsFile(configDir)}: ${(err as Error).message}`);
  }
  try {
    const parsed = JSON.parse(text) as unknown;
    if (isObject(parsed) && typeof parsed.api_url === "string" && typeof parsed.token === "string") {
      return parsed as unknown as Credentials;
    }
  } catch {
    // reported below
  }
  throw new CliError(`${credentialsFile(configDir)} is damaged: run "cellar login" again`);
}

/** Written to a temporary file then renamed: a crash never leaves half a credentials file. */
export function writeCredentials(configDir: string, creds: Credentials): void {
  fs.mkdirSync(configDir, { recursive: true, mode: 0o700 });
  const file = credentialsFile(configDir);
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(creds, null, 2) + "\n", { mode: 0o600 });
  fs.chmodSync(tmp, 0o600);
  fs.renameSync(tmp, file);
}

export function removeCredentials(configDir: string): boolean {
  try {
    fs.unlinkSync(credentialsFile(configDir));
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

/** The `exp` claim of a JWT, read without verifying it (only the server can verify). */
export function jwtExp(jwt: string): number | null {
  const payload = jwt.split(".")[1];
  if (!payload) return null;
  try {
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as unknown;
    return isObject(claims) && typeof claims.exp === "number" ? claims.exp : null;
  } catch {
    return null;
  }
}

export async function exchangeToken(apiUrl: string, token: string): Promise<string> {
  const res = await request({
    method: "POST",
    url: `${apiUrl}/v1/tokens/exchange`,
    authorization: `Basic ${Buffer.from(`:${token}`).toString("base64")}`,
  }).catch((err: unknown) => {
    if (err instanceof ApiError && err.status === 401) {
      throw new CliError(
        `the API at ${apiUrl} refused this token: check it, then run "cellar login --token <tk-us-...>"`,
      );
    }
    throw err;
  });
  const jwt = isObject(res.json) ? res.json.token : undefined;
  if (typeof jwt !== "string") throw new CliError(`${apiUrl} answered the token exchange without a token`);
  return jwt;
}

/** The API to use for public calls (the catalog): no login needed. */
export function knownApiUrl(configDir: string, env: ClientEnv): string {
  const url = env.apiUrl ?? readCredentials(configDir)?.api_url;
  if (!url) throw new CliError('which API? run "cellar login --api-url <url> ..." or set CELLAR_API_URL');
  return normaliseApiUrl(url);
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

/** An authenticated client of one Cellar API. */
export class Session {
  private constructor(
    private creds: Credentials,
    /** Null when the token came from the environment: nothing is written then. */
    private readonly configDir: string | null,
  ) {}

  get apiUrl(): string {
    return this.creds.api_url;
  }

  /** Credentials from CELLAR_API_URL + CELLAR_TOKEN, else from the credentials file. */
  static open(configDir: string, env: ClientEnv): Session {
    if (env.token) {
      const stored = readCredentials(configDir);
      const apiUrl = env.apiUrl ?? stored?.api_url;
      if (!apiUrl) throw new CliError("CELLAR_TOKEN is set but not CELLAR_API_URL: set both");
      return new Session({ api_url: normaliseApiUrl(apiUrl), token: env.token }, null);
    }
    const creds = readCredentials(configDir);
    if (!creds) {
      throw new CliError(
        'not logged in: run "cellar login --api-url <url> --token <tk-us-...>" (or set CELLAR_API_URL and CELLAR_TOKEN)',
      );
    }
    return new Session(creds, configDir);
  }

  async bearer(forceRefresh = false): Promise<string> {
    if (!forceRefresh && this.hasFreshBearer()) return this.creds.bearer!;
    const fresh = await exchangeToken(this.creds.api_url, this.creds.token);
    const exp = jwtExp(fresh) ?? nowSeconds() + 15 * 60;
    this.creds = { ...this.creds, bearer: fresh, bearer_refresh_at: exp - REFRESH_MARGIN_S };
    if (this.configDir) writeCredentials(this.configDir, this.creds);
    return fresh;
  }

  /** A main-API call (`/v1/...`). A rejected cached bearer is exchanged again once. */
  async call(method: string, apiPath: string, body?: unknown): Promise<Response> {
    return this.withBearer(method, `/v1${apiPath}`, body);
  }

  /** A database-API call (`/api/...`) with the user's session, which the API accepts too. */
  async dbApi(method: string, apiPath: string, body?: unknown): Promise<Response> {
    return this.withBearer(method, `/api${apiPath}`, body);
  }

  /** A database-API call (`/api/...`) with an add-on token. */
  async dbApiWithToken(
    addonToken: string,
    method: string,
    apiPath: string,
    body?: unknown,
  ): Promise<Response> {
    return request({
      method,
      url: `${this.creds.api_url}/api${apiPath}`,
      authorization: `Bearer ${addonToken}`,
      ...(body !== undefined ? { body } : {}),
    });
  }

  private async withBearer(method: string, fullPath: string, body: unknown): Promise<Response> {
    const url = `${this.creds.api_url}${fullPath}`;
    const send = async (bearer: string) =>
      request({ method, url, authorization: `Bearer ${bearer}`, ...(body !== undefined ? { body } : {}) });
    const cached = this.hasFreshBearer();
    try {
      return await send(await this.bearer());
    } catch (err) {
      // The server may have restarted with a new secret, or the token been renewed elsewhere.
      if (cached && err instanceof ApiError && err.status === 401) return send(await this.bearer(true));
      throw err;
    }
  }

  private hasFreshBearer(): boolean {
    const { bearer, bearer_refresh_at: refreshAt } = this.creds;
    return Boolean(bearer && refreshAt && nowSeconds() < refreshAt);
  }
}

export type { JsonObject };
