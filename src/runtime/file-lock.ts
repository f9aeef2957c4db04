// A lock shared by the agents of one machine (emulated hosts are separate processes): an
// O_EXCL file holding the owner's pid. A lock whose owner is dead is taken over.
import fs from "node:fs/promises";
import path from "node:path";

const POLL_MS = 15;

const ownerOf = async (file: string) => (await fs.readFile(file, "utf8").catch(() => "")).trim();

async function alive(owner: string): Promise<boolean> {
  const pid = Number(owner);
  if (!Number.isInteger(pid) || pid <= 0) return false;
  // A zombie still has /proc/<pid>/stat; its state letter is Z.
  const stat = await fs.readFile(`/proc/${pid}/stat`, "utf8").catch(() => null);
  return stat !== null && !/^\d+ \(.*\) Z/.test(stat);
}

/** Runs `fn` while holding `file`; waits at most `timeoutMs` for another holder. */
export async function withFileLock<T>(file: string, fn: () => Promise<T>, timeoutMs = 30_000): Promise<T> {
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o755 });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await fs.writeFile(file, String(process.pid), { flag: "wx", mode: 0o644 });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    // Another process holds it; the previous holder may have died without unlocking.
    const owner = await ownerOf(file);
    // An empty file is a lock being written: only an old one is abandoned.
    const young = owner === "" && Date.now() - ((await fs.stat(file).catch(() => null))?.mtimeMs ?? 0) < 2000;
    if (!young && !(await alive(owner))) {
      // Only the dead owner's file: another process may have taken the lock meanwhile.
      if ((await ownerOf(file)) === owner) await fs.rm(file, { force: true });
      continue;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for the lock ${file}`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  try {
    return await fn();
  } finally {
    await fs.rm(file, { force: true });
  }
}
