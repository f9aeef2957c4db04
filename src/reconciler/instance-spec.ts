// What the controller asks an agent to run: the spec of a database node or gateway.
// The agent receives everything it needs (settings, limits, TLS material, credentials), so a
// host never holds a CA key.
import type { ArchitectureModel, Plan } from "../domain/catalog.ts";
import { planPostgresSettings, type PlanSettings } from "../engines/postgresql/plan-settings.ts";
import type { PemPair } from "../engines/tls/pki.ts";
import type { GatewaySpec } from "../engines/postgresql/haproxy-config.ts";
import type { NodeBackupSpec } from "../engines/postgresql/backup/types.ts";
import type { HaSpec } from "../engines/postgresql/patroni-config.ts";

export interface Credentials {
  username: string;
  password: string;
  dbname: string;
}

export interface NodeSpec {
  engine: "postgresql";
  version: "15";
  model: ArchitectureModel;
  resourceId: string;
  listen: { address: string; port: number };
  limits: { memoryMb: number; vcpu: number; diskGb: number; exclusiveCpus: boolean };
  settings: PlanSettings;
  forceTls: boolean;
  tls: PemPair;
  credentials: Credentials;
  /** Continuous backups (pgBackRest) of a single-node database: what its agent keeps. */
  backup?: NodeBackupSpec;
  /** Set on the nodes of an HA cluster (Business, Enterprise): Patroni runs PostgreSQL. */
  ha?: HaSpec;
}

export type GatewaySpecJson = GatewaySpec;

export function nodeSpec(args: {
  model: ArchitectureModel;
  plan: Plan;
  resourceId: string;
  address: string;
  port: number;
  tls: PemPair;
  credentials: Credentials;
  backup?: NodeBackupSpec | undefined;
}): NodeSpec {
  const { plan, model } = args;
  return {
    engine: "postgresql",
    version: "15",
    model,
    resourceId: args.resourceId,
    listen: { address: args.address, port: args.port },
    limits: {
      memoryMb: plan.ramMb,
      vcpu: plan.vcpu,
      diskGb: plan.storageGb,
      exclusiveCpus: model === "dedicated",
    },
    settings: planPostgresSettings({ ramMb: plan.ramMb, maxConnections: plan.maxConnections, model }),
    // Dedicated databases refuse plaintext by default (reference §3.7).
    forceTls: model === "dedicated",
    tls: args.tls,
    credentials: args.credentials,
    ...(args.backup ? { backup: args.backup } : {}),
  };
}

export function gatewaySpec(
  listen: { address: string; port: number },
  nodes: Array<{ id: string; address: string; port: number; patroniPort?: number }>,
  plan: Plan,
): GatewaySpecJson {
  return {
    listen: { host: listen.address, port: listen.port },
    backends: nodes.map((n) => ({
      name: n.id,
      host: n.address,
      port: n.port,
      // HA: only the node whose Patroni holds the leader key gets traffic.
      ...(n.patroniPort !== undefined ? { patroniPort: n.patroniPort } : {}),
    })),
    // Above the nodes' limit, so PostgreSQL itself refuses extra clients with a clear error.
    maxConnections: plan.maxConnections + 20,
  };
}

/** The URL applications use: always the gateway, whose address survives plan changes. */
export function databaseUrl(
  model: ArchitectureModel,
  gateway: { address: string; port: number },
  c: Credentials,
): string {
  const sslmode = model === "dedicated" ? "require" : "prefer";
  return `postgresql://${c.username}:${c.password}@${gateway.address}:${gateway.port}/${c.dbname}?sslmode=${sslmode}`;
}
