// The runtime of a host that can isolate nothing (no usable cgroup controller, or not root).
// Sandboxes are remembered by name only, so the agent's calls succeed, and every answer says
// plainly that no limit is applied.
import { NotFoundError } from "../domain/errors.ts";
import { assertSandboxName, validateLimits } from "./limits.ts";
import {
  EMPTY_USAGE,
  type IsolationRuntime,
  type LimitName,
  type SandboxInfo,
  type SandboxLimits,
  type SandboxUsage,
} from "./types.ts";

export class NoopRuntime implements IsolationRuntime {
  readonly kind = "none";
  private readonly names = new Set<string>();

  /** `reason` is the probe's explanation, repeated in every SandboxInfo. */
  constructor(private readonly reason: string) {}

  ensureSandbox(name: string, limits: SandboxLimits): Promise<SandboxInfo> {
    assertSandboxName(name);
    validateLimits(limits);
    this.names.add(name);
    const requested: [LimitName, boolean][] = [
      ["memory", limits.memoryBytes !== undefined],
      ["cpuQuota", limits.cpuQuota !== undefined],
      ["cpuWeight", limits.cpuWeight !== undefined],
      ["cpus", limits.cpus !== undefined],
      ["pids", limits.pidsMax !== undefined],
      ["io", (limits.io?.length ?? 0) > 0],
    ];
    const notes = requested
      .filter(([, r]) => r)
      .map(([l]) => `${l} not enforced: no isolation (${this.reason})`);
    return Promise.resolve({ name, enforced: [], notes });
  }

  updateLimits(name: string, limits: SandboxLimits): Promise<SandboxInfo> {
    if (!this.names.has(name)) return Promise.reject(new NotFoundError(`sandbox ${name}`));
    return this.ensureSandbox(name, limits);
  }

  addProcess(name: string): Promise<void> {
    if (!this.names.has(name)) return Promise.reject(new NotFoundError(`sandbox ${name}`));
    return Promise.resolve();
  }

  procsFiles(name: string): string[] {
    assertSandboxName(name);
    return [];
  }

  /** Unknown without cgroups: the agent tracks its children's pids itself. */
  processes(): Promise<number[]> {
    return Promise.resolve([]);
  }

  usage(name: string): Promise<SandboxUsage> {
    if (!this.names.has(name)) return Promise.reject(new NotFoundError(`sandbox ${name}`));
    return Promise.resolve({ ...EMPTY_USAGE });
  }

  listSandboxes(): Promise<string[]> {
    return Promise.resolve([...this.names].sort());
  }

  /** Nothing to kill: without cgroups the agent stops its processes itself. */
  removeSandbox(name: string): Promise<void> {
    this.names.delete(assertSandboxName(name));
    return Promise.resolve();
  }
}
