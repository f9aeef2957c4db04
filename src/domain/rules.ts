// The rules of the two architecture models (shared/product/architecture-models.md).
// Pure functions: each returns a decision or throws a typed domain error naming the rule.
import type { ArchitectureModel, Catalog, Plan, Provider } from "./catalog.ts";
import { findPlan, findProvider, plansOf } from "./catalog.ts";
import { ForbiddenError, ValidationError } from "./errors.ts";

/** A user's role on an app or on a Dedicated database. */
export type Role = "owner" | "collaborator" | "limited" | "none";

/** Shared: owner and collaborators (not limited). Dedicated: the owner only. */
export function canProvision(model: ArchitectureModel, role: Role): boolean {
  if (model === "dedicated") return role === "owner";
  return role === "owner" || role === "collaborator";
}

export function assertCanProvision(model: ArchitectureModel, role: Role): void {
  if (canProvision(model, role)) return;
  throw new ForbiddenError(
    model === "dedicated"
      ? "only the owner may provision a Dedicated Resources database"
      : "limited collaborators may not provision, open, rescale or remove add-ons",
    "insufficient_role",
  );
}

/** Open, rescale or remove a database (and everything under the database API). */
export function canManageDatabase(role: Role): boolean {
  return role === "owner" || role === "collaborator";
}

export function assertCanManageDatabase(role: Role): void {
  if (!canManageDatabase(role)) {
    throw new ForbiddenError(
      "limited collaborators may not open, rescale or remove add-ons",
      "insufficient_role",
    );
  }
}

/** Deleting or renaming an app (or destroying a Dedicated database) is the owner's alone. */
export function canDestroyScope(role: Role): boolean {
  return role === "owner";
}

/** Who manages collaborators: the owner and collaborators (reference), never limited ones. */
export function canManageCollaborators(role: Role): boolean {
  return role === "owner" || role === "collaborator";
}

/** Dedicated databases have only the Collaborator role; Shared apps also have Limited. */
export function allowedCollaboratorRoles(model: ArchitectureModel): Array<"collaborator" | "limited"> {
  return model === "dedicated" ? ["collaborator"] : ["collaborator", "limited"];
}

export const CLASSES_BY_MODEL: Record<ArchitectureModel, readonly string[]> = {
  shared: ["starter", "business"],
  dedicated: ["starter", "business", "enterprise"],
};

/**
 * Resolves a plan for a provider in a region, enforcing: the plan exists, belongs to the
 * provider, is enabled, is offered in the region, and its class exists in the model.
 */
export function resolvePlan(
  catalog: Catalog,
  provider: Provider,
  planRef: string,
  region: string,
  field = "plan_id",
): Plan {
  const plan = findPlan(catalog, planRef);
  if (!plan) {
    throw ValidationError.field(
      field,
      `plan ${planRef} does not exist for ${provider.id}; ${offeredIn(catalog, provider, region)}`,
    );
  }
  if (plan.providerId !== provider.id) {
    throw ValidationError.field(
      field,
      `plan ${plan.name} belongs to ${plan.providerId}, not to ${provider.id}; ${offeredIn(catalog, provider, region)}`,
    );
  }
  if (!CLASSES_BY_MODEL[provider.architectureModel].includes(plan.serviceClass)) {
    throw ValidationError.field(
      field,
      `class ${plan.serviceClass} is not offered on ${provider.architectureModel} resources ` +
        `(allowed: ${CLASSES_BY_MODEL[provider.architectureModel].join(", ")})`,
    );
  }
  if (plan.disabled) {
    const alt = plan.disabledAlternativePlanId
      ? `use ${plan.disabledAlternativePlanId}`
      : offeredIn(catalog, provider, region);
    throw ValidationError.field(field, `plan ${plan.name} is disabled; ${alt}`);
  }
  if (!plan.regions.includes(region)) {
    throw ValidationError.field(
      field,
      `plan ${plan.name} is not available in region ${region}; ${offeredIn(catalog, provider, region)}`,
    );
  }
  return plan;
}

/** "what is allowed" for plan errors: the provider's enabled plans in the region. */
function offeredIn(catalog: Catalog, provider: Provider, region: string): string {
  const classes = CLASSES_BY_MODEL[provider.architectureModel];
  const names = plansOf(catalog, provider.id)
    .filter((p) => !p.disabled && p.regions.includes(region) && classes.includes(p.serviceClass))
    .map((p) => p.name);
  if (names.length === 0) return `${provider.id} offers no plan in region ${region}`;
  const shown = names.slice(0, 8).join(", ");
  const more =
    names.length > 8 ? ` and ${names.length - 8} more (GET /v1/addon_providers/${provider.id}/plans)` : "";
  return `${provider.id} plans in ${region}: ${shown}${more}`;
}

/** Resolves a provider id or alias; Dedicated Resources are PostgreSQL only. */
export function resolveProvider(
  catalog: Catalog,
  ref: string,
  model: ArchitectureModel | undefined,
  field = "addon_provider_id",
): Provider {
  const provider = findProvider(catalog, ref);
  if (!provider) {
    const ids = catalog.providers.filter((p) => !model || p.architectureModel === model).map((p) => p.id);
    throw ValidationError.field(field, `unknown provider ${ref} (known: ${ids.join(", ")})`);
  }
  const dedicatedPg = catalog.providers
    .filter((p) => p.architectureModel === "dedicated" && p.engine === "postgresql")
    .map((p) => p.id)
    .join(" or ");
  if (model && provider.architectureModel !== model) {
    const hint =
      model === "dedicated"
        ? `${provider.id} is a Shared Resources add-on provider; Dedicated Resources databases are PostgreSQL only: use ${dedicatedPg}`
        : `${provider.id} is a Dedicated Resources provider: create it with POST /v1/databases`;
    throw ValidationError.field(field, hint);
  }
  if (model === "dedicated" && provider.engine !== "postgresql") {
    throw ValidationError.field(
      field,
      `${provider.id} runs ${provider.engine}; Dedicated Resources databases are PostgreSQL only: use ${dedicatedPg}`,
    );
  }
  return provider;
}

export type PlanChangeKind = "none" | "resize" | "class-switch";

export interface PlanChangeDecision {
  kind: PlanChangeKind;
  /** Whether the reference service has downtime for this change (§2.5, §3.5). */
  downtime: boolean;
}

/**
 * Plan change rules. Shared: any size up or down, class switch both ways.
 * Dedicated: class switch both ways at equal or larger size; size never decreases.
 */
export function decidePlanChange(model: ArchitectureModel, from: Plan, to: Plan): PlanChangeDecision {
  if (from.providerId !== to.providerId) {
    throw ValidationError.field(
      "plan_id",
      `plan ${to.name} belongs to ${to.providerId}; a ${from.providerId} database can only move to ${from.providerId} plans`,
    );
  }
  if (from.id === to.id) return { kind: "none", downtime: false };
  if (model === "dedicated" && to.ramMb < from.ramMb) {
    throw ValidationError.field(
      "plan_id",
      `plan ${to.name} is smaller than the current ${from.name}: Dedicated databases scale up only`,
    );
  }
  const fromHa = from.nodes > 1;
  const toHa = to.nodes > 1;
  // A multi-node target changes without downtime (standbys first, then a switchover); a
  // single-node target restarts, unless it is a cluster shrinking to its own size.
  const downtime = !toHa && !(fromHa && from.ramMb === to.ramMb);
  return { kind: from.serviceClass === to.serviceClass ? "resize" : "class-switch", downtime };
}

const NAME_RE = /^[a-z0-9][a-z0-9-]*$/;

/** App and Dedicated database names: 6–48 lowercase letters, digits and hyphens. */
export function validateResourceName(name: unknown, field = "name"): string {
  if (typeof name !== "string") {
    throw ValidationError.field(field, "must be a string of 6 to 48 lowercase letters, digits and hyphens");
  }
  if (name.length < 6 || name.length > 48) {
    throw ValidationError.field(field, `must be 6 to 48 characters long (got ${name.length})`);
  }
  if (!NAME_RE.test(name) || name.endsWith("-")) {
    throw ValidationError.field(
      field,
      "may contain only lowercase letters, digits and hyphens, and must not start or end with a hyphen",
    );
  }
  return name;
}

/** An IPv4 CIDR of at least /25 (a /24 is larger and fine, a /26 too small). */
export function validateIpRange(value: unknown, field = "ip_range"): string {
  if (typeof value !== "string")
    throw ValidationError.field(field, "must be an IPv4 CIDR such as 10.20.0.0/24");
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(value);
  if (!m) throw ValidationError.field(field, `${value} is not an IPv4 CIDR such as 10.20.0.0/24`);
  const octets = m.slice(1, 5).map(Number);
  const prefix = Number(m[5]);
  if (octets.some((o) => o > 255) || prefix > 32) {
    throw ValidationError.field(
      field,
      `${value} is not a valid IPv4 CIDR: each number must be 0 to 255 and the range at least a /25`,
    );
  }
  if (prefix > 25)
    throw ValidationError.field(field, `${value} is too small: the range must be at least a /25`);
  const addr = octets.reduce((acc, o) => acc * 256 + o, 0);
  const hostBits = 32 - prefix;
  const rest = addr % 2 ** hostBits;
  if (rest !== 0) {
    const network = addr - rest;
    const dotted = [24, 16, 8, 0].map((shift) => Math.floor(network / 2 ** shift) % 256).join(".");
    throw ValidationError.field(
      field,
      `${value} has host bits set: give the network address, ${dotted}/${prefix}`,
    );
  }
  return value;
}
