// The catalog of add-on providers and plans (config/catalog.json, editable by the operator).
// Pure: parsing and lookups only; reading the file happens in src/main.

export type ArchitectureModel = "shared" | "dedicated";
export type ServiceClass = "starter" | "business" | "enterprise";

export interface Provider {
  id: string;
  name: string;
  architectureModel: ArchitectureModel;
  engine: string;
  aliases: string[];
  shortDescription: string;
  description: string;
  logoUrl: string;
  providerName: string;
  providerUrl: string;
  hdsAvailable: boolean;
  category: { id: string; name: string; description: string; position: number };
}

export interface Plan {
  id: string;
  name: string;
  providerId: string;
  displayName: string;
  description: string;
  serviceClass: ServiceClass;
  ramMb: number;
  storageGb: number;
  maxConnections: number;
  vcpu: number;
  nodes: number;
  gateways: number;
  pricePerMonth: number;
  /** Decimal string, as the reference's `pricings.default.price`. */
  pricePerMinute: string;
  hdsAvailable: boolean;
  sku: string;
  position: number;
  disabled: boolean;
  disabledAlternativePlanId: string | null;
  onDemand: boolean;
  toBeDiscontinued: boolean;
  /** Regions where the plan may be provisioned. */
  regions: string[];
}

export interface Catalog {
  currency: string;
  providers: Provider[];
  plans: Plan[];
}

export class CatalogError extends Error {}

type Obj = Record<string, unknown>;

function field<T>(o: Obj, key: string, check: (v: unknown) => v is T, where: string, fallback?: T): T {
  const v = o[key];
  if (v === undefined && fallback !== undefined) return fallback;
  if (!check(v)) {
    const got = v === undefined ? "missing" : JSON.stringify(v);
    throw new CatalogError(`${where}: field "${key}" must be ${EXPECTED.get(check) ?? "set"} (got ${got})`);
  }
  return v;
}
const isStr = (v: unknown): v is string => typeof v === "string";
const isNum = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);
const isBool = (v: unknown): v is boolean => typeof v === "boolean";
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const isStrArray = (v: unknown): v is string[] => Array.isArray(v) && v.every(isStr);
const isPositive = (v: unknown): v is number => isNum(v) && v > 0;
const isCount = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 1;
// Shown to clients as `pricings.default.price`: a plain decimal, never "1e-4" or "0.00o1".
const isDecimal = (v: unknown): v is string => isStr(v) && /^\d+(\.\d+)?$/.test(v);
const EXPECTED = new Map<(v: unknown) => boolean, string>([
  [isStr, "a string"],
  [isNum, "a number"],
  [isBool, "true or false"],
  [isObj, "an object"],
  [isStrArray, "an array of strings"],
  [isPositive, "a number above 0"],
  [isCount, "an integer of 1 or more"],
  [isDecimal, 'a decimal string such as "0.0001666667"'],
  [Array.isArray, "an array"],
]);

function parseProvider(o: Obj, i: number): Provider {
  const where = `providers[${i}]`;
  const model = field(o, "architecture_model", isStr, where);
  if (model !== "shared" && model !== "dedicated") {
    throw new CatalogError(`${where}: architecture_model must be "shared" or "dedicated"`);
  }
  const cat = field(o, "category", isObj, where);
  return {
    id: field(o, "id", isStr, where),
    name: field(o, "name", isStr, where),
    architectureModel: model,
    engine: field(o, "engine", isStr, where),
    aliases: field(o, "aliases", isStrArray, where, []),
    shortDescription: field(o, "short_description", isStr, where, ""),
    description: field(o, "description", isStr, where, ""),
    logoUrl: field(o, "logo_url", isStr, where, ""),
    providerName: field(o, "provider_name", isStr, where, ""),
    providerUrl: field(o, "provider_url", isStr, where, ""),
    hdsAvailable: field(o, "hds_available", isBool, where, false),
    category: {
      id: field(cat, "id", isStr, `${where}.category`),
      name: field(cat, "name", isStr, `${where}.category`),
      description: field(cat, "description", isStr, `${where}.category`, ""),
      position: field(cat, "position", isNum, `${where}.category`, 0),
    },
  };
}

function parsePlan(o: Obj, i: number): Plan {
  const where = `plans[${i}]`;
  const cls = field(o, "service_class", isStr, where);
  if (cls !== "starter" && cls !== "business" && cls !== "enterprise") {
    throw new CatalogError(`${where}: service_class must be starter, business or enterprise`);
  }
  const alt = o.disabled_alternative_plan_id;
  return {
    id: field(o, "id", isStr, where),
    name: field(o, "name", isStr, where),
    providerId: field(o, "provider", isStr, where),
    displayName: field(o, "display_name", isStr, where),
    description: field(o, "description", isStr, where, ""),
    serviceClass: cls,
    ramMb: field(o, "ram_mb", isPositive, where),
    storageGb: field(o, "storage_gb", isPositive, where),
    maxConnections: field(o, "max_connections", isCount, where),
    vcpu: field(o, "vcpu", isPositive, where),
    nodes: field(o, "nodes", isCount, where),
    gateways: field(o, "gateways", isCount, where),
    pricePerMonth: field(o, "price_per_month", isNum, where),
    pricePerMinute: field(o, "price_per_minute", isDecimal, where),
    hdsAvailable: field(o, "hds_available", isBool, where, false),
    sku: field(o, "sku", isStr, where, ""),
    position: field(o, "position", isNum, where, i),
    disabled: field(o, "disabled", isBool, where, false),
    disabledAlternativePlanId: typeof alt === "string" ? alt : null,
    onDemand: field(o, "on_demand", isBool, where, false),
    toBeDiscontinued: field(o, "to_be_discontinued", isBool, where, false),
    regions: field(o, "regions", isStrArray, where),
  };
}

/** Validates the catalog file's content; every problem names the entry and field. */
export function parseCatalog(raw: unknown): Catalog {
  if (!isObj(raw)) throw new CatalogError("catalog: expected a JSON object");
  const providers = field(raw, "providers", Array.isArray, "catalog").map((p, i) => {
    if (!isObj(p)) throw new CatalogError(`providers[${i}]: expected an object`);
    return parseProvider(p, i);
  });
  const plans = field(raw, "plans", Array.isArray, "catalog").map((p, i) => {
    if (!isObj(p)) throw new CatalogError(`plans[${i}]: expected an object`);
    return parsePlan(p, i);
  });
  const providerRefs = new Set<string>();
  providers.forEach((p, i) => {
    for (const ref of [p.id, ...p.aliases]) {
      if (providerRefs.has(ref)) throw new CatalogError(`providers[${i}]: id or alias ${ref} is used twice`);
      providerRefs.add(ref);
    }
  });
  const planRefs = new Set<string>();
  plans.forEach((p, i) => {
    // Plans are looked up by id or name: both must be unambiguous.
    for (const ref of new Set([p.id, p.name])) {
      if (planRefs.has(ref)) throw new CatalogError(`plans[${i}]: id or name ${ref} is used twice`);
      planRefs.add(ref);
    }
    if (!providers.some((pr) => pr.id === p.providerId)) {
      throw new CatalogError(
        `plans[${i}] (${p.id}): field "provider" names unknown provider ${p.providerId}`,
      );
    }
  });
  plans.forEach((p, i) => {
    const alt = p.disabledAlternativePlanId;
    if (alt !== null && !plans.some((q) => q.id === alt && q.providerId === p.providerId)) {
      throw new CatalogError(
        `plans[${i}] (${p.id}): field "disabled_alternative_plan_id" names no plan of ${p.providerId}: ${alt}`,
      );
    }
  });
  return { currency: field(raw, "currency", isStr, "catalog", "EUR"), providers, plans };
}

export function findProvider(catalog: Catalog, idOrAlias: string): Provider | undefined {
  return catalog.providers.find((p) => p.id === idOrAlias || p.aliases.includes(idOrAlias));
}

/** Plans are addressed by id or by name (clients send either). */
export function findPlan(catalog: Catalog, idOrName: string): Plan | undefined {
  return catalog.plans.find((p) => p.id === idOrName || p.name === idOrName);
}

export function plansOf(catalog: Catalog, providerId: string): Plan[] {
  return catalog.plans.filter((p) => p.providerId === providerId).sort((a, b) => a.position - b.position);
}
