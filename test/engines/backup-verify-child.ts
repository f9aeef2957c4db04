// A stand-in for an agent in the crash test of backup-verify.test.ts: it verifies one backup
// in a sandbox and is killed -9 by the test while the scratch server runs.
// argv: <instance dir> <stanza> <set> <run dir> <cgroup parent>
import { BackupVerifications } from "../../src/agent/backup-verifications.ts";
import { CgroupV1Runtime } from "../../src/runtime/cgroup-v1.runtime.ts";
import { probeIsolation } from "../../src/runtime/probe.ts";
import { parseStanzaInfo } from "../../src/engines/postgresql/backup/backup-info.ts";

const [instDir, stanza, , runDir, parent] = process.argv.slice(2) as [string, string, string, string, string];
const probe = await probeIsolation();
const runtime = new CgroupV1Runtime({ dirs: probe.layout.v1, parent });
// VERIFY_KEY_HEX: the node is encrypted under this key (its scratch copy goes on an encrypted volume).
const key = process.env.VERIFY_KEY_HEX ? Buffer.from(process.env.VERIFY_KEY_HEX, "hex") : null;
const copyKey = () =>
  Promise.resolve(key ? { encrypted: true as const, key } : { encrypted: false as const });
const v = new BackupVerifications({ dirOf: () => instDir, scratch: () => ({ runtime, runDir, copyKey }) });
const info = process.env.VERIFY_INFO_JSON ?? "[]";
v.consider({
  id: "inst-crash",
  configFile: `${instDir}/backup/pgbackrest.conf`,
  stanza,
  backups: parseStanzaInfo(info, stanza).backups,
  timeline: 1,
  onDone: () => process.stdout.write("done\n"),
});
setInterval(() => undefined, 60_000);
