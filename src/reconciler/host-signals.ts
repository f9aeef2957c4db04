// Wakes long-polling agents when their host's desired instances change (in-process; agents
// also re-poll on a timeout, which covers changes made by another controller).
import { EventEmitter } from "node:events";

export class HostSignals extends EventEmitter {
  constructor() {
    super();
    this.setMaxListeners(0);
  }

  private closed = false;

  get isClosed(): boolean {
    return this.closed;
  }

  /** Releases every waiting agent request (controller shutdown). */
  close(): void {
    this.closed = true;
    for (const name of this.eventNames()) this.emit(name);
  }

  notify(hostId: string): void {
    this.emit(hostId);
  }
  wait(hostId: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.closed) return resolve();
      const done = () => {
        clearTimeout(timer);
        this.off(hostId, done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.on(hostId, done);
    });
  }
}
