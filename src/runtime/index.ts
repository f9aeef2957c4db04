// Public surface of the isolation runtime, for the host agent.
export { allocateCpus, type CpuAllocation } from "./cpu-allocator.ts";
export { IsolationError } from "./cgroup-fs.ts";
export { CgroupV1Runtime, type CgroupV1Options } from "./cgroup-v1.runtime.ts";
export { CgroupV2Runtime, type CgroupV2Options } from "./cgroup-v2.runtime.ts";
export { createIsolationRuntime, type RuntimeOptions } from "./factory.ts";
export { formatCpuList, parseCpuList, sandboxNameFor } from "./limits.ts";
export { NoopRuntime } from "./noop.runtime.ts";
export { describeIsolation, probeIsolation, type Availability, type IsolationProbe } from "./probe.ts";
export { spawnInSandbox, wrapCommand, WRAPPER_FAILED_EXIT } from "./spawn.ts";
export {
  detachVolume,
  ensureVolume,
  removeVolume,
  volumeUsage,
  type Volume,
  type VolumeUsage,
} from "./volume.ts";
export type * from "./types.ts";
export {
  ensureNodeNet,
  inNetns,
  listNodeNetns,
  netnsId,
  netnsOfPid,
  NODE_NET_RANGE,
  nodeNetNames,
  removeNodeNet,
  type NodeNet,
  type NodeNetNames,
} from "./netns.ts";
