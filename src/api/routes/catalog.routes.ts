// Public catalog (no authentication, as in the reference) and region discovery.
import { Hono } from "hono";
import type { Plan, Provider } from "../../domain/catalog.ts";
import { findProvider, plansOf } from "../../domain/catalog.ts";
import { NotFoundError } from "../../domain/errors.ts";
import type { Deps, Env } from "../deps.ts";

export function planJson(p: Plan, currency: string) {
  return {
    id: p.id,
    name: p.name,
    display_name: p.displayName,
    description: p.description,
    position: p.position,
    on_demand: p.onDemand,
    disabled: p.disabled,
    disabled_alternative_plan_id: p.disabledAlternativePlanId,
    sku: p.sku,
    hds_available: p.hdsAvailable,
    to_be_discontinued: p.toBeDiscontinued,
    trial_available: false,
    price: p.pricePerMonth,
    pricings: { default: { price: p.pricePerMinute, currency, period: "minute" } },
    // Cellar's additions: what the plan gives.
    service_class: p.serviceClass,
    ram_mb: p.ramMb,
    storage_gb: p.storageGb,
    max_connections: p.maxConnections,
    vcpu: p.vcpu,
    nodes: p.nodes,
    gateways: p.gateways,
    regions: p.regions,
  };
}

export function providerJson(p: Provider, plans: Plan[], currency: string) {
  return {
    id: p.id,
    name: p.name,
    logo_url: p.logoUrl,
    short_description: p.shortDescription,
    description: p.description,
    category: p.category,
    provider_name: p.providerName,
    provider_url: p.providerUrl,
    hds_available: p.hdsAvailable,
    architecture_model: p.architectureModel,
    plans: plans.map((pl) => planJson(pl, currency)),
  };
}

export function catalogRoutes(deps: Deps): Hono<Env> {
  const app = new Hono<Env>();
  const { catalog } = deps;

  app.get("/addon_providers", (c) => {
    const category = c.req.query("category_id");
    const region = c.get("region");
    const providers = catalog.providers.filter((p) => !category || p.category.id === category);
    return c.json({
      addon_providers: providers.map((p) =>
        providerJson(
          p,
          plansOf(catalog, p.id).filter((pl) => !pl.disabled && pl.regions.includes(region)),
          catalog.currency,
        ),
      ),
    });
  });

  app.get("/addon_providers/:id/plans", (c) => {
    const provider = findProvider(catalog, c.req.param("id"));
    if (!provider) throw new NotFoundError("addon_provider");
    const showAll = c.req.query("show_all") === "true";
    const region = c.get("region");
    const plans = plansOf(catalog, provider.id).filter(
      (p) => showAll || (!p.disabled && p.regions.includes(region)),
    );
    return c.json({ plans: plans.map((p) => planJson(p, catalog.currency)) });
  });

  app.get("/addon_categories", (c) => {
    const cats = new Map(catalog.providers.map((p) => [p.category.id, p.category]));
    return c.json({ addon_categories: [...cats.values()] });
  });

  return app;
}

export function regionsJson(deps: Deps) {
  const base = deps.config.publicUrl;
  return deps.config.regions.map((r) => ({
    name: r.name,
    display_name: r.displayName,
    api: `${base}/regions/${r.name}`,
    database_api: `${base}/regions/${r.name}`,
    dashboard: base,
    ssh: "",
    default: r.name === deps.config.defaultRegion,
    availability_zones: r.azs,
  }));
}
