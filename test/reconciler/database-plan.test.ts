import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  NO_HOST_REASON,
  WAIT_RECHECK_MS,
  planDatabase,
  type DatabaseObservation,
} from "../../src/reconciler/database-plan.ts";

const base: DatabaseObservation = {
  id: "ad-1",
  generation: 1,
  phase: "provisioning",
  phaseReason: "",
  deleteRequested: false,
  deleted: false,
  pendingOperations: 0,
  instances: 0,
  hosts: 0,
};

describe("planDatabase", () => {
  const cases: Array<{
    name: string;
    obs: Partial<DatabaseObservation> | null;
    step: Record<string, unknown>;
    requeue: number | undefined;
    message: RegExp;
  }> = [
    {
      name: "a database that no longer exists: nothing",
      obs: null,
      step: { kind: "none" },
      requeue: undefined,
      message: /no longer exists/,
    },
    {
      name: "a deleted database: nothing",
      obs: { deleted: true, deleteRequested: true, phase: "deleted" },
      step: { kind: "none" },
      requeue: undefined,
      message: /is deleted/,
    },
    {
      name: "pending operations start first",
      obs: { generation: 2, pendingOperations: 2 },
      step: { kind: "start-operations", generation: 2 },
      requeue: 0,
      message: /work starts on generation 2/,
    },
    {
      name: "pending operations start before a deletion is finalized",
      obs: { generation: 2, pendingOperations: 1, deleteRequested: true },
      step: { kind: "start-operations", generation: 2 },
      requeue: 0,
      message: /work starts/,
    },
    {
      name: "no host: stays provisioning and says why",
      obs: {},
      step: { kind: "set-phase", phase: "provisioning", reason: NO_HOST_REASON },
      requeue: WAIT_RECHECK_MS,
      message: /provisioning: waiting for a host: no host agent has registered/,
    },
    {
      name: "no host, reason already written: waits without writing",
      obs: { phaseReason: NO_HOST_REASON },
      step: { kind: "none" },
      requeue: WAIT_RECHECK_MS,
      message: /no host agent has registered; checking again in 60 s/,
    },
    {
      name: "hosts registered but nothing placed: still provisioning, reason says so",
      obs: { hosts: 2, phaseReason: NO_HOST_REASON },
      step: {
        kind: "set-phase",
        phase: "provisioning",
        reason: "waiting for a host: 2 host agent(s) registered, but instance placement is not available yet",
      },
      requeue: WAIT_RECHECK_MS,
      message: /2 host agent\(s\) registered/,
    },
    {
      name: "deletion with no instance: finalize",
      obs: { deleteRequested: true, generation: 2 },
      step: { kind: "finalize-deletion" },
      requeue: undefined,
      message: /deletion finalized/,
    },
    {
      name: "deletion with instances left: deleting, waiting for them",
      obs: { deleteRequested: true, instances: 2, phase: "running" },
      step: { kind: "set-phase", phase: "deleting", reason: "waiting for 2 instance(s) to be removed" },
      requeue: WAIT_RECHECK_MS,
      message: /now deleting/,
    },
    {
      name: "a database with instances is never declared running by this pass",
      obs: { instances: 1 },
      step: { kind: "none" },
      requeue: WAIT_RECHECK_MS,
      message: /not driven by this controller yet/,
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

  it("never plans the running phase, whatever it observes", () => {
    const phases = ["provisioning", "running", "updating", "deleting", "suspended", "failed"] as const;
    for (const phase of phases) {
      for (const instances of [0, 1, 3]) {
        for (const deleteRequested of [false, true]) {
          const plan = planDatabase({ ...base, phase, instances, deleteRequested }, "ad-1");
          if (plan.step.kind === "set-phase") assert.notEqual(plan.step.phase, "running");
        }
      }
    }
  });
});
