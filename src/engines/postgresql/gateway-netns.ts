// A gateway that runs inside a network namespace (a Dedicated database's network): started by
// root through nsenter, which joins the namespace, then setpriv, which drops to the daemon's
// user with no supplementary group left over from root. Both exec, so the pid is HAProxy's.
import fs from "node:fs/promises";
import path from "node:path";
import type { OsUser } from "./command.ts";

const NETNS_DIR = "/run/netns";

/** How to spawn `argv` inside `ns` as `user`, and the spawn options that go with it. */
export function launchInNetns(
  ns: string,
  user: OsUser | undefined,
  argv: readonly string[],
): { command: string; args: string[] } {
  const drop = user ? ["setpriv", `--reuid=${user.uid}`, `--regid=${user.gid}`, "--clear-groups", "--"] : [];
  return { command: "nsenter", args: [`--net=${path.join(NETNS_DIR, ns)}`, "--", ...drop, ...argv] };
}

/** Whether `pid` runs in `ns` (undefined: in this process's own namespace). */
export async function runsInNetns(pid: number, ns: string | undefined): Promise<boolean> {
  const actual = await fs.readlink(`/proc/${pid}/ns/net`).catch(() => null);
  if (actual === null) return false;
  if (ns === undefined) return actual === (await fs.readlink("/proc/self/ns/net"));
  const stat = await fs.stat(path.join(NETNS_DIR, ns)).catch(() => null);
  return stat !== null && actual === `net:[${stat.ino}]`;
}
