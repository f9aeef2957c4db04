// File helpers for cgroup trees, shared by both back-ends. Kernel errors are turned into
// messages that name the file and the value, since "EINVAL" alone says nothing to an operator.
import fs from "node:fs/promises";
import path from "node:path";

/** A kernel refused a cgroup operation; the message says which file and what was written. */
export class IsolationError extends Error {
  constructor(
    message: string,
    readonly file: string,
    readonly errno?: string,
  ) {
    super(message);
    this.name = "IsolationError";
  }
}

function errnoOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

export async function exists(p: string): Promise<boolean> {
  try {
    await fs.access(p);
    return true;
  } catch {
    return false;
  }
}

export async function readText(file: string): Promise<string | null> {
  try {
    return (await fs.readFile(file, "utf8")).trim();
  } catch (err) {
    if (errnoOf(err) === "ENOENT") return null;
    throw err;
  }
}

export async function readNumber(file: string): Promise<number | null> {
  const text = await readText(file);
  if (text === null || text === "" || text === "max") return null;
  const n = Number(text);
  return Number.isFinite(n) ? n : null;
}

/** "key value" lines (cpu.stat, memory.events, memory.oom_control) → map. */
export async function readKeyed(file: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const line of ((await readText(file)) ?? "").split("\n")) {
    const [key, value] = line.trim().split(/\s+/);
    if (key && value !== undefined && Number.isFinite(Number(value))) out.set(key, Number(value));
  }
  return out;
}

export async function writeValue(file: string, value: string): Promise<void> {
  try {
    await fs.writeFile(file, value);
  } catch (err) {
    const code = errnoOf(err);
    const hint =
      code === "EBUSY"
        ? " (the kernel cannot apply it now: usage above the new limit, or processes in a parent cgroup)"
        : code === "EINVAL"
          ? " (value rejected by the kernel)"
          : "";
    throw new IsolationError(`cannot write "${value}" to ${file}: ${code ?? String(err)}${hint}`, file, code);
  }
}

export async function readPids(procsFile: string): Promise<number[]> {
  const text = await readText(procsFile);
  if (!text) return [];
  return text
    .split("\n")
    .map(Number)
    .filter((n) => Number.isInteger(n) && n > 0);
}

/** Lists the sub-directories of a directory (empty when it does not exist). */
export async function subdirs(dir: string): Promise<string[]> {
  try {
    const entries = await fs.readdir(dir, { withFileTypes: true });
    return entries.filter((e) => e.isDirectory()).map((e) => e.name);
  } catch (err) {
    if (errnoOf(err) === "ENOENT") return [];
    throw err;
  }
}

/** Polls `check` every `intervalMs` until it returns true or the deadline passes. */
export async function waitFor(
  check: () => Promise<boolean>,
  timeoutMs: number,
  intervalMs = 10,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Signals a process that may be gone already (between listing and signalling: the goal). */
export function killQuietly(pid: number, signal: NodeJS.Signals = "SIGKILL"): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone between listing and killing: that is the goal.
  }
}

/**
 * SIGKILLs every pid listed in `procsFiles` until all are empty, then rmdirs `dirs`.
 * Repeats the listing because a process may fork between one read and the kill.
 */
export async function killAllAndRemove(
  procsFiles: readonly string[],
  dirs: readonly string[],
  timeoutMs: number,
): Promise<void> {
  const emptied = await waitFor(async () => {
    let any = false;
    for (const f of procsFiles) {
      for (const pid of await readPids(f)) {
        any = true;
        killQuietly(pid);
      }
    }
    return !any;
  }, timeoutMs);
  if (!emptied) {
    const left = (await Promise.all(procsFiles.map(readPids))).flat();
    throw new IsolationError(
      `processes ${left.join(",")} still alive after SIGKILL for ${timeoutMs} ms`,
      procsFiles[0] ?? "",
    );
  }
  for (const dir of dirs) await removeCgroupDir(dir, timeoutMs);
}

/** rmdir of a cgroup; EBUSY lasts a moment after the last process exits, so retry until the deadline. */
export async function removeCgroupDir(dir: string, timeoutMs: number): Promise<void> {
  let lastCode: string | undefined;
  const done = await waitFor(async () => {
    try {
      await fs.rmdir(dir);
      return true;
    } catch (err) {
      lastCode = errnoOf(err);
      if (lastCode === "ENOENT") return true;
      if (lastCode === "EBUSY") return false;
      throw new IsolationError(`cannot remove ${dir}: ${lastCode ?? String(err)}`, dir, lastCode);
    }
  }, timeoutMs);
  if (!done)
    throw new IsolationError(`cannot remove ${dir}: still busy after ${timeoutMs} ms`, dir, lastCode);
}

export function join(...parts: string[]): string {
  return path.join(...parts);
}
