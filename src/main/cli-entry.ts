// Entry point of the `cellar` command: server commands (up, agent, admin) and client commands.
import { Command } from "commander";
import { registerClientCommands } from "../cli/commands.ts";
import { registerServerCommands } from "./server-commands.ts";

const program = new Command();
program.name("cellar").description("Cellar: self-hosted managed databases").showHelpAfterError();
registerServerCommands(program);
registerClientCommands(program);

program.parseAsync().catch((err: Error) => {
  process.stderr.write(`cellar: ${err.message}\n`);
  process.exit(1);
});
