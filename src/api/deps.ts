// The plain dependencies object shared by the API routes (no DI container).
import type { Config } from "../config.ts";
import type { Catalog } from "../domain/catalog.ts";
import type { Logger } from "../log.ts";
import type { Db } from "../store/db.ts";
import type { User } from "../store/users.store.ts";
import type { JwtClaims } from "./jwt.ts";
import type { HostSignals } from "../reconciler/host-signals.ts";
import type { Pki } from "../engines/tls/pki.ts";

export interface Deps {
  db: Db;
  config: Config;
  catalog: Catalog;
  log: Logger;
  jwtSecret: Buffer;
  now: () => Date;
  /** Wakes the reconcile loop after a mutation was queued (it also polls on its own). */
  kickReconciler: () => void;
  /** Wakes agents long-polling for their host's desired instances. */
  hostSignals: HostSignals;
  /** Region CAs (database server certificates) and the internal CA (agent listener). */
  pki: Pki;
  /** Seals the nodes' encryption-at-rest keys in the store (store/instance-keys.store.ts). */
  masterKey: Buffer;
}

export interface Env {
  Variables: {
    user: User;
    claims: JwtClaims;
    region: string;
  };
}
