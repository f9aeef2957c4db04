// The controller alone in a process of its own, for crash tests (started by
// controller-process.ts): configured from the environment like `cellar up`, without local
// hosts. It stops when its parent goes away (stdin closes), even if the parent was killed,
// so a test that dies never leaves a controller behind.
import { loadConfig } from "../../src/config.ts";
import { createLogger } from "../../src/log.ts";
import { startController } from "../../src/main/controller.ts";

// controller-process.ts waits for this line.
const READY_LINE = "controller ready";

const config = loadConfig();
const log = createLogger(config.logLevel);
const controller = await startController(config, log);
process.stdout.write(`${READY_LINE} ${controller.url}\n`);

let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  controller.stop().then(
    () => process.exit(0),
    (err: Error) => {
      log.error("stop failed", { err: err.message });
      process.exit(1);
    },
  );
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
process.stdin.on("close", stop);
process.stdin.resume();
