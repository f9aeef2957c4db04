// What the CLI prints: aligned tables and key/value blocks for people, raw API JSON for scripts.

export type Cell = string | number | boolean | null | undefined;

export interface Output {
  /** `--json`: print the API's objects as they came, nothing else on stdout. */
  readonly json: boolean;
  /** A line (or block) on stdout. */
  print(text: string): void;
  /** Progress and notes on stderr, so stdout stays parseable. */
  note(text: string): void;
  /** Prints `body` as JSON with --json, else what `human` returns. */
  result(body: unknown, human: () => string): void;
}

export function createOutput(json: boolean): Output {
  const print = (text: string) => void process.stdout.write(text.endsWith("\n") ? text : text + "\n");
  return {
    json,
    print,
    note: (text) => void process.stderr.write(text.endsWith("\n") ? text : text + "\n"),
    result(body, human) {
      if (json) print(JSON.stringify(body, null, 2));
      else print(human());
    },
  };
}

export const cellText = (c: Cell): string => (c === null || c === undefined || c === "" ? "-" : String(c));

/** Columns padded to their widest cell, two spaces apart; the last column is not padded. */
export function table(headers: string[], rows: Cell[][]): string {
  const texts = rows.map((r) => headers.map((_, i) => cellText(r[i])));
  const widths = headers.map((h, i) => Math.max(h.length, ...texts.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  if (texts.length === 0) return line(headers);
  return [line(headers), ...texts.map(line)].join("\n");
}

/** `Key:   value` lines, keys aligned. Pairs marked optional are left out when empty. */
export function keyValues(pairs: ([string, Cell] | [string, Cell, "optional"])[]): string {
  const shown = pairs.filter(([, v, optional]) => !(optional && (v === undefined || v === null || v === "")));
  const width = Math.max(...shown.map(([k]) => k.length)) + 1;
  return shown.map(([k, v]) => `${(k + ":").padEnd(width)} ${cellText(v)}`).join("\n");
}

/** Bytes in binary units (1024), one decimal: "12.5 MB". */
export function formatSize(bytes: unknown): string {
  if (typeof bytes !== "number" || !Number.isFinite(bytes)) return "-";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function formatRam(mb: unknown): string {
  if (typeof mb !== "number") return "-";
  return mb >= 1024 && mb % 1024 === 0 ? `${mb / 1024} GB` : `${mb} MB`;
}

export function formatPrice(amount: unknown, currency = "EUR"): string {
  return typeof amount === "number" ? `${amount.toFixed(2)} ${currency}` : "-";
}

/** A nested string field (`field(addon, "plan", "name")`), or undefined. */
export function field(o: unknown, ...keys: string[]): Cell {
  let v: unknown = o;
  for (const k of keys) {
    if (typeof v !== "object" || v === null) return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return typeof v === "string" || typeof v === "number" || typeof v === "boolean" ? v : undefined;
}

/** A string or number field as text, else `fallback`. */
export function text(v: unknown, fallback = ""): string {
  return typeof v === "string" || typeof v === "number" ? String(v) : fallback;
}
