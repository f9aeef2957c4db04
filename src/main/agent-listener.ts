// The controller's TLS listener for host agents, and the sweep that marks silent hosts
// unreachable.
import https from "node:https";
import { serve, type ServerType } from "@hono/node-server";
import { Hono } from "hono";
import type { Config } from "../config.ts";
import type { Deps } from "../api/deps.ts";
import { handleError } from "../api/errors.ts";
import { agentRoutes } from "../api/routes/agent.routes.ts";
import { logicalBackupAgentRoutes } from "../api/routes/logical-backups-agent.routes.ts";
import { INTERNAL_CA } from "../engines/tls/pki.ts";
import { markSilentHostsUnreachable } from "../store/hosts.store.ts";
import { enqueueReconcile } from "../store/reconcile-queue.store.ts";

export const agentUrlOf = (config: Config): string =>
  `https://${config.listenHost}:${config.agentPort}/agent/v1`;

export async function listenForAgents(deps: Deps, joinToken: string): Promise<ServerType> {
  const { config } = deps;
  const cert = await deps.pki.issueServer(INTERNAL_CA, {
    commonName: "cellar-controller",
    ipAddresses: [config.listenHost === "0.0.0.0" ? "127.0.0.1" : config.listenHost],
    dnsNames: ["localhost"],
  });
  const app = new Hono();
  app.onError((err, c) => handleError(err, c, deps.log));
  app.route("/agent/v1", agentRoutes(deps, joinToken));
  app.route("/agent/v1", logicalBackupAgentRoutes(deps));
  return new Promise<ServerType>((resolve, reject) => {
    const s = serve(
      {
        fetch: app.fetch,
        hostname: config.listenHost,
        port: config.agentPort,
        createServer: https.createServer,
        serverOptions: { key: cert.keyPem, cert: cert.certPem, minVersion: "TLSv1.3" },
      },
      () => resolve(s),
    );
    s.once("error", reject);
  });
}

/** Every few seconds: hosts silent too long become unreachable, and their databases are looked at. */
export function startHostSweep(deps: Deps): { stop(): void } {
  const every = Math.max(1000, Math.floor(deps.config.hostSilenceMs / 3));
  const timer = setInterval(() => {
    void (async () => {
      const lost = await markSilentHostsUnreachable(deps.db, deps.config.hostSilenceMs);
      for (const hostId of lost) {
        deps.log.warn("host unreachable: no heartbeat", { host: hostId });
        const { rows } = await deps.db.query<{ database_id: string }>(
          "SELECT DISTINCT database_id FROM instances WHERE host_id = $1",
          [hostId],
        );
        for (const r of rows) await enqueueReconcile(deps.db, r.database_id);
      }
      if (lost.length) deps.kickReconciler();
    })().catch((err: Error) => deps.log.error("host sweep failed", { err: err.message }));
  }, every);
  return { stop: () => clearInterval(timer) };
}
