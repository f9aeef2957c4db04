// Control-plane start-up steps shared by every composition root: secrets and the operator's
// first admin. Each step is idempotent and safe when two controllers run it at once.
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import type { Config } from "../config.ts";
import type { Logger } from "../log.ts";
import type { Db, Queryable } from "../store/db.ts";
import { checkMasterKey, MASTER_KEY_BYTES } from "../store/instance-keys.store.ts";
import { hashToken } from "../store/users.store.ts";

/** The JWT signing secret: from the config, else generated once and kept in the store. */
export async function ensureJwtSecret(q: Queryable, config: Config): Promise<Buffer> {
  if (config.jwtSecret) return Buffer.from(config.jwtSecret, "utf8");
  await q.query("INSERT INTO settings (key, value) VALUES ('jwt_secret', $1) ON CONFLICT (key) DO NOTHING", [
    randomBytes(32).toString("hex"),
  ]);
  const { rows } = await q.query<{ value: string }>("SELECT value FROM settings WHERE key = 'jwt_secret'");
  return Buffer.from(rows[0]!.value, "hex");
}

export const ADMIN_USER_ID = "us-admin";

/** With CELLAR_ADMIN_TOKEN set, that token is the first admin's API token. */
export async function ensureAdmin(q: Queryable, config: Config, log: Logger): Promise<void> {
  if (!config.adminToken) return;
  if (!/^tk-us-[A-Za-z0-9_-]{16,200}$/.test(config.adminToken)) {
    throw new Error("CELLAR_ADMIN_TOKEN must look like tk-us-<at least 16 letters, digits, _ or ->");
  }
  await q.query(
    `INSERT INTO users (id, username, email, fullname, is_admin) VALUES ($1, 'admin', 'admin@cellar.local', 'Cellar admin', true)
     ON CONFLICT DO NOTHING`,
    [ADMIN_USER_ID],
  );
  const { rowCount } = await q.query(
    `INSERT INTO api_tokens (id, user_id, name, token_hash) VALUES ('tok-admin-bootstrap', $1, 'CELLAR_ADMIN_TOKEN', $2)
     ON CONFLICT (id) DO UPDATE SET token_hash = excluded.token_hash
       WHERE api_tokens.token_hash <> excluded.token_hash`,
    [ADMIN_USER_ID, hashToken(config.adminToken)],
  );
  if (rowCount) log.info("admin API token set", { user: ADMIN_USER_ID });
}

const BOOTSTRAP_LOCK = 0x63656c62; // "celb"

/**
 * Every start-up step in one transaction under an advisory lock: two controllers inserting
 * the admin token at once would otherwise collide on its unique hash and one would fail.
 */
export async function bootstrapStore(db: Db, config: Config, log: Logger): Promise<Buffer> {
  return db.tx(async (client) => {
    await client.query("SELECT pg_advisory_xact_lock($1)", [BOOTSTRAP_LOCK]);
    const secret = await ensureJwtSecret(client, config);
    await ensureAdmin(client, config, log);
    return secret;
  });
}

/**
 * The token that admits a new host agent. Kept in the store (every controller accepts it)
 * and in <data dir>/agent-join-token for the local fleet; an operator hands it to new hosts.
 */
export async function ensureAgentJoinToken(q: Queryable, dataDir: string): Promise<string> {
  await q.query(
    "INSERT INTO settings (key, value) VALUES ('agent_join_token', $1) ON CONFLICT (key) DO NOTHING",
    [`tk-join-${randomBytes(32).toString("base64url")}`],
  );
  const { rows } = await q.query<{ value: string }>(
    "SELECT value FROM settings WHERE key = 'agent_join_token'",
  );
  const token = rows[0]!.value;
  await fs.mkdir(dataDir, { recursive: true });
  await fs.writeFile(path.join(dataDir, "agent-join-token"), token + "\n", { mode: 0o600 });
  return token;
}

/**
 * The controller's master key, which seals the nodes' encryption keys in the store: read from
 * its file (hex, mode 0600), made there at first start. The file is created whole or not at
 * all (written aside, then linked), so two controllers sharing it race safely.
 */
export async function ensureMasterKey(q: Queryable, file: string): Promise<Buffer> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, randomBytes(MASTER_KEY_BYTES).toString("hex") + "\n", { mode: 0o600 });
  await fs.link(tmp, file).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== "EEXIST") throw err;
  });
  await fs.rm(tmp, { force: true });
  await fs.chmod(file, 0o600);
  const key = Buffer.from((await fs.readFile(file, "utf8")).trim(), "hex");
  if (key.length !== MASTER_KEY_BYTES) {
    throw new Error(
      `${file} must hold a ${MASTER_KEY_BYTES}-byte master key in hex (${2 * MASTER_KEY_BYTES} digits)`,
    );
  }
  await checkMasterKey(q, key, file);
  return key;
}
