// The client commands of `cellar`, registered on the program of src/main/cli-entry.ts.
import type { Command } from "commander";
import { registerAddonCommands } from "./addons.cmd.ts";
import { registerAppCommands } from "./apps.cmd.ts";
import { registerBackupCommands } from "./backups.cmd.ts";
import { registerLogicalBackupCommands } from "./logical-backups.cmd.ts";
import { registerConsoleCommands } from "./console.cmd.ts";
import { registerDatabaseCommands } from "./databases.cmd.ts";
import { registerSessionCommands } from "./session.cmd.ts";
import { registerUserCommands } from "./users.cmd.ts";

export function registerClientCommands(program: Command): void {
  program
    .option("--json", "print the API's JSON objects instead of tables (for scripts)")
    .option(
      "--config-dir <dir>",
      "where credentials are kept (default: CELLAR_CONFIG_DIR, else ~/.config/cellar)",
    );
  registerSessionCommands(program);
  registerAppCommands(program);
  registerAddonCommands(program);
  registerDatabaseCommands(program);
  registerUserCommands(program);
  registerBackupCommands(program);
  registerLogicalBackupCommands(program);
  registerConsoleCommands(program);
}
