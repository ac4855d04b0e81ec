/**
 * `failover`: the one command line. Each original tool is a subcommand (`failover failc list`),
 * and each is also a `deno task` (`deno task failc list`). Every tool module exports
 * `main(args): Promise<number>` returning its exit code.
 *
 * @module
 */
import { EXIT } from "../lib/cli.ts";

/** A tool: where its module is and what it does (for `failover --help`). */
export interface ToolEntry {
  /** Module path relative to this file. */
  module: string;
  /** One line for the help text. */
  summary: string;
}

/** The tools: name, module (relative to this file), what it does. */
const TOOL_TABLE = `
faild      ../daemon/faild/faild.ts  the state daemon: holds service states for peers
failc      ./failc.ts                get, set, list and delete services on a faild
failstat   ./failstat.ts             dump the state of one or several faild
failsh     ../shell/failsh.ts        the failover shell: runs a sandboxed script
failmon    ./failmon.ts              live monitor of failsh (terminal, web, line, once)
faildebug  ./faildebug.ts            list and set log levels of a running daemon
hc         ../daemon/hc/hc.ts        the health checker
hcmon      ./hcmon.ts                web view and JSON of many hc instances
demo       ./demo.ts                 live failover demo on loopback (no root needed)
repl       ./repl.ts                 a REPL with the client preloaded
`;

/** Every tool of the command line, by subcommand name. */
export const TOOLS: Record<string, ToolEntry> = Object.fromEntries(
  TOOL_TABLE.trim().split("\n").map((line) => {
    const [name, module, ...summary] = line.split(/\s+/);
    return [name!, { module: module!, summary: summary.join(" ") }];
  }),
);

/** The text of `failover --help`. */
export function usage(): string {
  const width = Math.max(...Object.keys(TOOLS).map((n) => n.length));
  const lines = Object.entries(TOOLS).map(([name, t]) => `  ${name.padEnd(width)}  ${t.summary}`);
  return [
    "Usage: failover <tool> [options]   (or: deno task <tool> [options])",
    "",
    "High availability for ordinary Linux servers. Tools:",
    ...lines,
    "",
    "Run `failover <tool> --help` for a tool's options and exit codes.",
  ].join("\n");
}

/**
 * Runs a tool by name.
 *
 * @param args The command line: the tool's name, then its arguments.
 * @returns The exit code.
 */
export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    console.log(usage());
    return name === undefined ? EXIT.usage : EXIT.ok;
  }
  const tool = TOOLS[name];
  if (!tool) {
    console.error(`Unknown tool "${name}": expected one of ${Object.keys(TOOLS).join(", ")}`);
    return EXIT.usage;
  }
  const mod = await import(new URL(tool.module, import.meta.url).href) as {
    main(args: string[]): Promise<number>;
  };
  return await mod.main(rest);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
