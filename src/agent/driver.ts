// What the agent needs from an engine driver: converge one instance, observe it, remove it.
import type { BackupReport } from "../engines/postgresql/backup/types.ts";
import type { InstanceStatus } from "../store/instances.store.ts";

export interface DesiredInstance {
  id: string;
  databaseId: string;
  kind: "node" | "gateway" | "etcd";
  port: number;
  spec: Record<string, unknown>;
  specGeneration: number;
  desiredState: "running" | "stopped" | "deleted";
  /** A planned switchover of the node's cluster: its leader's agent asks Patroni for it. */
  switchover?: { id: string; leader: string; candidate: string };
  /** A node's encryption-at-rest key (base64), from the controller; kept in memory only. */
  encryptionKey?: string;
}

export interface Observation {
  status: InstanceStatus;
  message: string;
  role: string;
  /** The spec generation the instance runs with (0 while not yet applied). */
  observedGeneration: number;
  usage: Record<string, number>;
  /** A node's continuous backups (node-backups.ts), sent with the report. */
  backup?: BackupReport | undefined;
  /** A node's data dir: encrypted at rest (policy read back, key present), or why not. */
  atRest?: { encrypted: boolean; detail: string } | undefined;
}

export interface DriverEvents {
  converge: () => void;
  report: () => void;
  /** What an instance is now, learnt outside a convergence or a look (its Patroni died). */
  observed: (id: string, obs: Observation) => void;
}

export interface InstanceDriver {
  /** Brings the instance to its desired spec and state; idempotent; may take seconds. */
  converge(inst: DesiredInstance): Promise<Observation>;
  /** Cheap look at the instance as it is now. */
  observe(inst: DesiredInstance): Promise<Observation>;
  /** Stops and removes everything of an instance id (also for orphans found on disk). */
  remove(instanceId: string): Promise<void>;
  /** Instance ids that have something on this host (directories, processes). */
  listLocal(): Promise<string[]>;
  /**
   * Calls `converge` when an instance needs converging before the next heartbeat (a lost
   * Patroni), `report` when the controller should learn something before it (a backup landed),
   * `observed` with an instance's new state when it changed under a convergence in flight.
   */
  watch?(events: DriverEvents): void;
  unwatch?(): void;
  /** The last lines of a node's engine log, when the driver keeps one (null: none yet). */
  logTail?(instanceId: string, maxLines: number): Promise<string | null>;
}
