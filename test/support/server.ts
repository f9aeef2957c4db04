// The harness's app on a real loopback listener, for clients that speak HTTP (the CLI).
import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import { serve } from "@hono/node-server";
import type { Harness } from "./api.ts";

export interface Listening {
  url: string;
  close(): Promise<void>;
}

/** Listens on a free port of 127.0.0.1. */
export async function listen(h: Harness): Promise<Listening> {
  const server = await new Promise<Server>((resolve, reject) => {
    const s = serve({ fetch: h.app.fetch, hostname: "127.0.0.1", port: 0 }, () => resolve(s as Server));
    s.once("error", reject);
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    async close() {
      // Keep-alive connections of finished clients would hold close() open.
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
