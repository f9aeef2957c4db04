// pgsql-console: psql on an add-on's URL, verifying the server certificate with the region CA.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { act, enc, type Ctx } from "./context.ts";
import { ApiError, CliError, request, rooted, rootedList } from "./http.ts";
import type { Session } from "./session.ts";
import { findAddon, type TargetOpts } from "./targets.ts";

const URL_VAR = "SCALINGO_POSTGRESQL_URL";
/** Where the API serves the region's CA certificate (PEM). */
export const CA_PATH = "/api/ca.pem";

/** The URL variable of the add-on: by its resource id when the app has several. */
async function databaseUrl(session: Session, opts: TargetOpts): Promise<{ url: string; scope: string }> {
  let scope: string;
  let resourceId: string | undefined;
  if (opts.database) {
    if (opts.app) throw new CliError("--database and --app cannot be combined: pass one of them");
    scope = String(rooted(await session.call("GET", `/databases/${enc(opts.database)}`), "database").id);
  } else if (opts.app) {
    scope = opts.app;
    if (opts.addon) resourceId = String((await findAddon(session, opts.app, opts.addon)).resource_id);
  } else {
    throw new CliError("which database? pass --app <app> [--addon <id>] or --database <id>");
  }
  const vars = rootedList(await session.call("GET", `/apps/${enc(scope)}/variables`), "variables");
  const candidates = vars.filter((v) => String(v.name).startsWith(URL_VAR));
  const chosen =
    (resourceId && candidates.find((v) => String(v.value).includes(resourceId))) ||
    candidates.find((v) => v.name === URL_VAR);
  if (!chosen) {
    throw new CliError(
      `${scope} has no ${URL_VAR} yet: add a PostgreSQL add-on ("cellar addons-add --app ${scope} postgresql <plan> --wait") and wait until it runs`,
    );
  }
  return { url: String(chosen.value), scope };
}

/** The region CA, saved under the config dir; null when the API does not serve one. */
async function fetchCa(ctx: Ctx, apiUrl: string): Promise<string | null> {
  try {
    const res = await request({ method: "GET", url: `${apiUrl}${CA_PATH}` });
    const pem = typeof res.json === "string" ? res.json : "";
    if (!pem.includes("BEGIN CERTIFICATE")) return null;
    const file = path.join(
      ctx.configDir,
      "ca",
      `${new URL(apiUrl).host.replace(/[^A-Za-z0-9.-]/g, "_")}.pem`,
    );
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, pem);
    return file;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return null;
    throw err;
  }
}

/** A libpq URI with sslmode and sslrootcert replaced (percent-encoded as libpq decodes them). */
export function withVerifiedTls(url: string, caFile: string): string {
  const [base, query = ""] = url.split(/\?(.*)/s, 2) as [string, string?];
  const params = query
    .split("&")
    .filter((p) => p && !/^(sslmode|sslrootcert)=/.test(p))
    .concat(["sslmode=verify-full", `sslrootcert=${encodeURIComponent(caFile)}`]);
  return `${base}?${params.join("&")}`;
}

/** Unix-socket URIs (no host in the authority, or host=/path) have no TLS to verify. */
const isSocketUrl = (url: string) =>
  /^postgres(ql)?:\/\/([^@/]*@)?(\/|\?|$)/.test(url) || /[?&]host=%2F|[?&]host=\//.test(url);

function runPsql(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn("psql", [url], { stdio: "inherit" });
    // Ctrl-C belongs to psql (it cancels the query): the CLI must not die from it.
    const ignore = () => undefined;
    process.on("SIGINT", ignore);
    child.on("error", (err: NodeJS.ErrnoException) => {
      process.off("SIGINT", ignore);
      reject(
        err.code === "ENOENT"
          ? new CliError(
              "psql is not installed: install the PostgreSQL client (apt-get install postgresql-client)",
            )
          : err,
      );
    });
    child.on("exit", (code, signal) => {
      process.off("SIGINT", ignore);
      resolve(code ?? (signal ? 1 : 0));
    });
  });
}

export function registerConsoleCommands(program: Command): void {
  program
    .command("pgsql-console")
    .aliases(["psql-console", "postgresql-console"])
    .description("open psql on a PostgreSQL add-on (or a Dedicated database), with verified TLS")
    .option("-a, --app <name>", "the app")
    .option("--addon <id>", "the add-on, when the app has several")
    .option("--database <id>", "a Dedicated database instead of an app")
    .action(
      act<TargetOpts>(async (ctx, _args, opts) => {
        const session = ctx.session();
        const { url } = await databaseUrl(session, opts);
        let target = url;
        if (!isSocketUrl(url)) {
          const ca = await fetchCa(ctx, session.apiUrl);
          if (ca) target = withVerifiedTls(url, ca);
          else {
            ctx.out.note(
              `note: ${session.apiUrl}${CA_PATH} serves no CA certificate: connecting with the URL's own sslmode, the server certificate is not verified`,
            );
          }
        }
        const code = await runPsql(target);
        if (code !== 0) process.exitCode = code;
      }),
    );
}
