// Questions on the terminal: typed confirmations and hidden passwords. When stdin is not a
// terminal, answers are read line by line from it (scripts and tests pipe them in).
import { CliError } from "./http.ts";

let buffered = "";
let ended = false;

/** One line of piped stdin, or null at its end. */
async function readPipedLine(): Promise<string | null> {
  const stdin = process.stdin;
  for (;;) {
    const nl = buffered.indexOf("\n");
    if (nl >= 0) {
      const line = buffered.slice(0, nl).replace(/\r$/, "");
      buffered = buffered.slice(nl + 1);
      return line;
    }
    if (ended) {
      if (!buffered) return null;
      const last = buffered;
      buffered = "";
      return last;
    }
    const chunk = await new Promise<string | null>((resolve) => {
      const onData = (d: Buffer) => done(d.toString("utf8"));
      const onEnd = () => done(null);
      const done = (v: string | null) => {
        stdin.off("data", onData);
        stdin.off("end", onEnd);
        stdin.pause();
        resolve(v);
      };
      stdin.on("data", onData);
      stdin.on("end", onEnd);
      stdin.resume();
    });
    if (chunk === null) ended = true;
    else buffered += chunk;
  }
}

/** Reads a line from the terminal without echoing it (raw mode, handles backspace and ^C). */
async function readHiddenLine(): Promise<string | null> {
  const stdin = process.stdin;
  stdin.setRawMode(true);
  stdin.resume();
  try {
    return await new Promise<string | null>((resolve) => {
      let value = "";
      const onData = (d: Buffer) => {
        for (const ch of d.toString("utf8")) {
          if (ch === "\r" || ch === "\n") return finish(value);
          if (ch === "\u0003" || ch === "\u0004") return finish(null);
          if (ch === "\u007f" || ch === "\b") value = value.slice(0, -1);
          else value += ch;
        }
      };
      const finish = (v: string | null) => {
        stdin.off("data", onData);
        process.stderr.write("\n");
        resolve(v);
      };
      stdin.on("data", onData);
    });
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
  }
}

/** Asks on stderr; returns the answer, or null when there is nothing to read (EOF, ^C). */
export async function ask(question: string, opts: { hidden?: boolean } = {}): Promise<string | null> {
  process.stderr.write(question);
  if (process.stdin.isTTY && opts.hidden) return readHiddenLine();
  return readPipedLine();
}

/**
 * Asks to type `expected` before something is destroyed. Without an answer (no terminal,
 * nothing piped) it refuses, pointing at --yes.
 */
export async function confirmByTyping(what: string, ...accepted: string[]): Promise<void> {
  const expected = accepted.join(" or ");
  const answer = await ask(`This will permanently delete ${what}. To confirm, type ${expected}: `);
  if (answer === null)
    throw new CliError(`no confirmation given: nothing was deleted (pass --yes to skip it)`);
  if (!accepted.includes(answer.trim())) {
    throw new CliError(`"${answer.trim()}" does not match ${expected}: nothing was deleted`);
  }
}
