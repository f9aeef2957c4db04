// login, logout, whoami.
import type { Command } from "commander";
import { act } from "./context.ts";
import { CliError, request, rooted } from "./http.ts";
import { field, keyValues } from "./output.ts";
import { ask } from "./prompt.ts";
import {
  credentialsFile,
  exchangeToken,
  jwtExp,
  normaliseApiUrl,
  removeCredentials,
  Session,
  writeCredentials,
} from "./session.ts";

interface LoginOpts {
  apiUrl?: string;
  token?: string;
}

export function registerSessionCommands(program: Command): void {
  program
    .command("login")
    .description("log in to a Cellar API with an API token (tk-us-...) and remember it")
    .option("--api-url <url>", "the API, e.g. http://127.0.0.1:5080 (default: CELLAR_API_URL)")
    .option("--token <token>", "your API token (default: CELLAR_TOKEN, else asked)")
    .action(
      act<LoginOpts>(async (ctx, _args, opts) => {
        const rawUrl = opts.apiUrl ?? ctx.env.apiUrl;
        if (!rawUrl) throw new CliError("which API? pass --api-url <url> (cellar up prints it)");
        const apiUrl = normaliseApiUrl(rawUrl);
        const token = (
          opts.token ??
          ctx.env.token ??
          (await ask("API token: ", { hidden: true })) ??
          ""
        ).trim();
        if (!token) throw new CliError("no token given: pass --token <tk-us-...>");
        const bearer = await exchangeToken(apiUrl, token);
        const exp = jwtExp(bearer);
        writeCredentials(ctx.configDir, {
          api_url: apiUrl,
          token,
          bearer,
          ...(exp ? { bearer_refresh_at: exp - 300 } : {}),
        });
        const me = await request({
          method: "GET",
          url: `${apiUrl}/v1/users/self`,
          authorization: `Bearer ${bearer}`,
        });
        const user = rooted(me, "user");
        ctx.out.result(me.json, () =>
          [
            `Logged in to ${apiUrl} as ${String(user.username)} (${String(user.email)}).`,
            `Credentials saved in ${credentialsFile(ctx.configDir)}.`,
          ].join("\n"),
        );
      }),
    );

  program
    .command("logout")
    .description("forget the saved credentials")
    .action(
      act((ctx) => {
        const removed = removeCredentials(ctx.configDir);
        ctx.out.result({}, () => (removed ? "Logged out." : "Not logged in: nothing to forget."));
        return Promise.resolve();
      }),
    );

  program
    .command("whoami")
    .description("show who you are logged in as")
    .action(
      act(async (ctx) => {
        const session: Session = ctx.session();
        const res = await session.call("GET", "/users/self");
        const user = rooted(res, "user");
        ctx.out.result(res.json, () =>
          keyValues([
            ["User", field(user, "username")],
            ["Email", field(user, "email")],
            ["Admin", field(user, "is_admin") === true ? "yes" : "no"],
            ["API", session.apiUrl],
          ]),
        );
      }),
    );
}
