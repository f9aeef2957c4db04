// IPv4 addresses and CIDR blocks as numbers. Pure.

export interface Cidr {
  /** Network address as an unsigned 32-bit number. */
  network: number;
  prefix: number;
}

const DOTTED = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

export function parseIpv4(text: string): number | null {
  const m = DOTTED.exec(text);
  if (!m) return null;
  const octets = m.slice(1, 5).map(Number);
  // "010" would be octal to some parsers and decimal to others: refuse the ambiguity.
  if (octets.some((o) => o > 255) || m.slice(1, 5).some((o) => o.length > 1 && o.startsWith("0"))) {
    return null;
  }
  return octets.reduce((acc, o) => acc * 256 + o, 0);
}

export function formatIpv4(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join(".");
}

const sizeOf = (prefix: number) => 2 ** (32 - prefix);

export type CidrParse = { ok: true; cidr: Cidr } | { ok: false; reason: string };

/** Parses `a.b.c.d/n`; a block whose host bits are set is refused with the network it meant. */
export function parseCidr(text: string): CidrParse {
  const slash = text.indexOf("/");
  if (slash < 0) return { ok: false, reason: `${text} is not an IPv4 CIDR such as 203.0.113.10/32` };
  const addr = parseIpv4(text.slice(0, slash));
  const prefixText = text.slice(slash + 1);
  const prefix = /^\d{1,2}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (addr === null || !(prefix >= 0 && prefix <= 32)) {
    return { ok: false, reason: `${text} is not an IPv4 CIDR such as 203.0.113.10/32` };
  }
  const rest = addr % sizeOf(prefix);
  if (rest !== 0) {
    return {
      ok: false,
      reason: `${text} has host bits set: give the network address, ${formatIpv4(addr - rest)}/${prefix}`,
    };
  }
  return { ok: true, cidr: { network: addr, prefix } };
}

/** Like parseCidr, for values that were validated before (configuration, the store). */
export function cidrOf(text: string): Cidr {
  const parsed = parseCidr(text);
  if (!parsed.ok) throw new Error(parsed.reason);
  return parsed.cidr;
}

export function formatCidr(c: Cidr): string {
  return `${formatIpv4(c.network)}/${c.prefix}`;
}

export function cidrSize(c: Cidr): number {
  return sizeOf(c.prefix);
}

/** The n-th address of the block (0 is the network address). */
export function addressAt(c: Cidr, n: number): string {
  if (n < 0 || n >= cidrSize(c)) throw new Error(`address ${n} is outside ${formatCidr(c)}`);
  return formatIpv4(c.network + n);
}

export function cidrContainsAddress(c: Cidr, address: number): boolean {
  return address >= c.network && address < c.network + cidrSize(c);
}

export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  return a.network < b.network + cidrSize(b) && b.network < a.network + cidrSize(a);
}

/** The i-th of the `count` equal parts of a block (count a power of two). */
export function subdivide(c: Cidr, count: number, i: number): Cidr {
  const bits = Math.log2(count);
  if (!Number.isInteger(bits) || c.prefix + bits > 32 || i < 0 || i >= count) {
    throw new Error(`cannot cut ${formatCidr(c)} into ${count} parts`);
  }
  const prefix = c.prefix + bits;
  return { network: c.network + i * sizeOf(prefix), prefix };
}
