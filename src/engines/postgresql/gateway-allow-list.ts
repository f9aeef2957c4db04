// A gateway's allow list lives in a file of its own (`acl cellar_allowed src -f <file>`), so
// a firewall change rewrites the file and swaps the running HAProxy's copy through its admin
// socket in one atomic step (prepare, add, commit), with no reload: no new process, no
// listener handed over, milliseconds instead of a restart.
import net from "node:net";
import { type OsUser, writeFileAtomic } from "./command.ts";

export const ALLOW_FILE = "allowed.lst";

/** Writes the list (one CIDR per line); returns whether it changed. */
export async function writeAllowList(file: string, cidrs: readonly string[], user: OsUser | undefined) {
  return writeFileAtomic(file, cidrs.map((c) => `${c}\n`).join(""), 0o600, user);
}

/** One command line to the admin socket; its answer (the socket closes after it). */
function adminCommand(socketPath: string, line: string, timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path: socketPath });
    let out = "";
    socket.setTimeout(timeoutMs, () => {
      socket.destroy();
      reject(new Error(`admin socket ${socketPath}: no answer to ${line.split(" ")[0]}`));
    });
    socket.on("data", (d: Buffer) => (out += d.toString("utf8")));
    socket.once("error", reject);
    socket.once("end", () => resolve(out));
    socket.once("connect", () => socket.end(`${line}\n`));
  });
}

/**
 * Replaces the running gateway's copy of the list `file` with `cidrs`, atomically. False
 * when the process does not know the file (an older config): the caller reloads instead.
 */
export async function swapAllowList(
  socketPath: string,
  file: string,
  cidrs: readonly string[],
): Promise<boolean> {
  const prepared = await adminCommand(socketPath, `prepare acl ${file}`);
  const version = /New version created: (\d+)/.exec(prepared)?.[1];
  if (!version) return false;
  const commands = [
    ...cidrs.map((c) => `add acl @${version} ${file} ${c}`),
    `commit acl @${version} ${file}`,
  ];
  const answer = await adminCommand(socketPath, commands.join("; "));
  // Each add answers nothing when it worked; commit too. Anything else is an error message.
  return answer.trim() === "";
}
