// Where a host keeps its engine files: every on-host name derives from an instance id,
// so an agent restarted after a crash finds everything again (and sweeps orphans).
//   <hostDataDir>/instances/<instance id>/   a PostgresInstance or a Gateway base dir
//   <hostDataDir>/templates/postgresql-15/   the PgTemplate of this host
import fs from "node:fs/promises";
import path from "node:path";
import { ValidationError } from "../../domain/errors.ts";

const INSTANCE_ID = /^[a-z]+-[A-Za-z0-9-]{1,64}$/;

export class HostLayout {
  readonly instancesDir: string;

  constructor(readonly hostDataDir: string) {
    this.instancesDir = path.join(path.resolve(hostDataDir), "instances");
  }

  /** The base dir of an instance; the id is checked so it can never escape instances/. */
  instanceDir(instanceId: string): string {
    if (!INSTANCE_ID.test(instanceId)) {
      throw ValidationError.field("instance_id", `"${instanceId}" is not an instance id like inst-0a1b2c`);
    }
    return path.join(this.instancesDir, instanceId);
  }

  templateDir(engineVersion = "postgresql-15"): string {
    return path.join(path.resolve(this.hostDataDir), "templates", engineVersion);
  }

  /** Creates the shared directories; 0755 because daemons (postgres, haproxy) must traverse them. */
  async ensure(): Promise<void> {
    for (const dir of [this.instancesDir, path.dirname(this.templateDir())]) {
      await fs.mkdir(dir, { recursive: true, mode: 0o755 });
      await fs.chmod(dir, 0o755);
    }
  }

  /** Ids of the instances that have a directory on this host. */
  async listInstanceIds(): Promise<string[]> {
    const entries = await fs.readdir(this.instancesDir, { withFileTypes: true }).catch(() => []);
    return entries.filter((e) => e.isDirectory() && INSTANCE_ID.test(e.name)).map((e) => e.name);
  }
}
