import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  INSTANCE_RECHECK_MS,
  NO_HOST_REASON,
  WAIT_RECHECK_MS,
  planDatabase,
  type DatabaseObservation,
  type InstanceObservation,
} from "../../src/reconciler/database-plan.ts";

const base: DatabaseObservation = {
  id: "ad-1",
  generation: 1,
  observedGeneration: 0,
  phase: "provisioning",
  phaseReason: "",
  deleteRequested: false,
  deleted: false,
  pendingOperations: 0,
  instances: [],
  placement: null,
  planNodes: 1,
  model: "shared",
  dcs: null,
};

const inst = (over: Partial<InstanceObservation> = {}): InstanceObservation => ({
  id: "inst-n",
  kind: "node",
  hostName: "local-shared-1",
  hostReady: true,
  status: "running",
  statusMessage: "",
  specGeneration: 1,
  observedGeneration: 1,
  desiredState: "running",
  ...over,
});

const slots = [
  { kind: "node" as const, ordinal: 0, hostId: "host-a" },
  { kind: "gateway" as const, ordinal: 0, hostId: "host-a" },
];

describe("planDatabase", () => {
  const cases: Array<{
    name: string;
    obs: Partial<DatabaseObservation> | null;
    step: Record<string, unknown>;
    requeue: number | undefined;
    message: RegExp;
  }> = [
    {
      name: "gone: nothing",
      obs: null,
      step: { kind: "none" },
      requeue: undefined,
      message: /no longer exists/,
    },
    {
      name: "deleted: nothing",
      obs: { deleted: true, deleteRequested: true, phase: "deleted" },
      step: { kind: "none" },
      requeue: undefined,
      message: /is deleted/,
    },
    {
      name: "pending operations start first, even before a deletion",
      obs: { generation: 2, pendingOperations: 1, deleteRequested: true },
      step: { kind: "start-operations", generation: 2 },
      requeue: 0,
      message: /work starts on generation 2/,
    },
    {
      name: "no host registered: stays provisioning and says why",
      obs: {},
      step: { kind: "set-phase", phase: "provisioning", reason: NO_HOST_REASON },
      requeue: WAIT_RECHECK_MS,
      message: /is now provisioning/,
    },
    {
      name: "no capacity: the placement's reason is shown",
      obs: { placement: { ok: false, reason: "no capacity: needs 3 free dedicated host(s)" } },
      step: {
        kind: "set-phase",
        phase: "provisioning",
        reason: "waiting for a host: no capacity: needs 3 free dedicated host(s)",
      },
      requeue: WAIT_RECHECK_MS,
      message: /provisioning/,
    },
    {
      name: "already saying why: waits without writing",
      obs: { phaseReason: NO_HOST_REASON },
      step: { kind: "none" },
      requeue: WAIT_RECHECK_MS,
      message: /checking again/,
    },
    {
      name: "a placement: instances are created",
      obs: { placement: { ok: true, slots } },
      step: { kind: "place", slots },
      requeue: 0,
      message: /placed 2 instance\(s\) on host-a/,
    },
    {
      name: "a booting node: provisioning, naming the node, host and status",
      obs: { instances: [inst({ status: "booting", statusMessage: "initdb", observedGeneration: 0 })] },
      step: {
        kind: "set-phase",
        phase: "provisioning",
        reason: "waiting for node inst-n on local-shared-1: booting: initdb",
      },
      requeue: INSTANCE_RECHECK_MS,
      message: /provisioning/,
    },
    {
      name: "an unreachable host is named as such",
      obs: { instances: [inst({ status: "booting", hostReady: false, observedGeneration: 0 })] },
      step: {
        kind: "set-phase",
        phase: "provisioning",
        reason: "waiting for node inst-n on local-shared-1 (host unreachable): booting",
      },
      requeue: INSTANCE_RECHECK_MS,
      message: /unreachable/,
    },
    {
      name: "all instances running: the connection is verified (never running without it)",
      obs: { instances: [inst(), inst({ id: "inst-g", kind: "gateway" })] },
      step: { kind: "verify", generation: 1 },
      requeue: INSTANCE_RECHECK_MS,
      message: /checks a TLS connection/,
    },
    {
      name: "running and verified: steady",
      obs: { phase: "running", observedGeneration: 1, instances: [inst()] },
      step: { kind: "none" },
      requeue: WAIT_RECHECK_MS,
      message: /running at generation 1/,
    },
    {
      name: "a plan change: the new generation goes to the instances",
      obs: { phase: "running", generation: 2, observedGeneration: 1, instances: [inst()] },
      step: { kind: "update-specs", generation: 2 },
      requeue: 0,
      message: /generation 2/,
    },
    {
      name: "a plan change in progress: updating",
      obs: {
        phase: "running",
        generation: 2,
        observedGeneration: 1,
        instances: [inst({ specGeneration: 2, observedGeneration: 1, status: "restarting" })],
      },
      step: {
        kind: "set-phase",
        phase: "updating",
        reason: "waiting for node inst-n on local-shared-1: restarting",
      },
      requeue: INSTANCE_RECHECK_MS,
      message: /updating/,
    },
    {
      name: "an HA cluster waits for the region's etcd cluster before it is placed, and says why",
      obs: {
        planNodes: 2,
        placement: { ok: true, slots },
        dcs: { ready: false, reason: "waiting for etcd" },
      },
      step: { kind: "set-phase", phase: "provisioning", reason: "waiting for etcd" },
      requeue: INSTANCE_RECHECK_MS,
      message: /provisioning/,
    },
    {
      name: "a Dedicated HA cluster is placed with both the hosts' and the nodes' DCS endpoints",
      obs: {
        planNodes: 3,
        model: "dedicated",
        placement: { ok: true, slots },
        dcs: { ready: true, endpoints: ["https://e:2379"], serviceEndpoints: ["https://s:2379"] },
      },
      step: {
        kind: "place",
        slots,
        dcsEndpoints: ["https://e:2379"],
        dcsServiceEndpoints: ["https://s:2379"],
      },
      requeue: 0,
      message: /placed/,
    },
    {
      name: "an HA cluster is placed with the DCS endpoints its nodes will use",
      obs: {
        planNodes: 2,
        placement: { ok: true, slots },
        dcs: { ready: true, endpoints: ["https://e:2379"], serviceEndpoints: ["https://s:2379"] },
      },
      step: {
        kind: "place",
        slots,
        dcsEndpoints: ["https://e:2379"],
        dcsServiceEndpoints: ["https://s:2379"],
      },
      requeue: 0,
      message: /placed/,
    },
    {
      name: "a running Dedicated Starter switched to Business first waits for the region's etcd cluster",
      obs: {
        phase: "running",
        generation: 2,
        observedGeneration: 1,
        planNodes: 2,
        model: "dedicated",
        instances: [inst()],
      },
      step: { kind: "set-phase", phase: "updating", reason: "waiting for the region's etcd cluster" },
      requeue: INSTANCE_RECHECK_MS,
      message: /updating/,
    },
    {
      name: "a Dedicated database whose hosts cannot hold its bigger plan keeps serving and says why",
      obs: {
        model: "dedicated",
        phase: "running",
        generation: 2,
        observedGeneration: 1,
        planNodes: 2,
        instances: [inst(), inst({ id: "inst-m" })],
        resizeBlocked: "waiting for capacity: plan p needs 160 GB disk",
      },
      step: {
        kind: "set-phase",
        phase: "updating",
        reason: "waiting for capacity: plan p needs 160 GB disk",
      },
      requeue: WAIT_RECHECK_MS,
      message: /updating/,
    },
    {
      name: "deletion: the instances are asked to go first",
      obs: { deleteRequested: true, instances: [inst()] },
      step: { kind: "delete-instances" },
      requeue: 0,
      message: /remove its 1 instance/,
    },
    {
      name: "deletion: waits for hosts to remove them",
      obs: { deleteRequested: true, instances: [inst({ desiredState: "deleted", status: "removing" })] },
      step: {
        kind: "set-phase",
        phase: "deleting",
        reason: "waiting for instances to be removed: inst-n on local-shared-1 (removing)",
      },
      requeue: INSTANCE_RECHECK_MS,
      message: /deleting/,
    },
    {
      name: "deletion with nothing left: finalized",
      obs: { deleteRequested: true, phase: "deleting" },
      step: { kind: "finalize-deletion" },
      requeue: undefined,
      message: /finalized/,
    },
  ];

  for (const c of cases) {
    it(c.name, () => {
      const plan = planDatabase(c.obs === null ? null : { ...base, ...c.obs }, "ad-1");
      assert.deepEqual(plan.step, c.step);
      assert.equal(plan.requeueAfterMs, c.requeue);
      assert.match(plan.message, c.message);
    });
  }
});
