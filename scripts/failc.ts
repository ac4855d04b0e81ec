/**
 * failc: get, set, list and delete services on a faild, for services started outside failsh
 * and for scripts. A table for people, `--json` for programs, documented exit codes.
 *
 * ```sh
 * failc --url http://10.0.0.2:7100 --key-file /etc/failover/key list
 * failc set web FAIL --detail "maintenance"
 * failc --json get web
 * ```
 *
 * @module
 */
import { Command, CommanderError } from "@commander-js/extra-typings";
import { FaildClient, resolveKey } from "../lib/client.ts";
import type { ServiceState } from "../lib/types.ts";
import {
  EXIT,
  EXIT_HELP,
  exitCodeOf,
  recordTable,
  servicesTable,
  useColour,
} from "./_faild_table.ts";

/** The faild URL used when neither `--url` nor `FAILD_URL` is given. */
export const DEFAULT_URL = "http://127.0.0.1:7100";

function envOr(name: string, fallback: string): string {
  try {
    return Deno.env.get(name) ?? fallback;
  } catch {
    return fallback;
  }
}

function parseTimeout(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > 600_000) {
    throw new TypeError(`Invalid --timeout "${value}": expected milliseconds from 1 to 600000`);
  }
  return n;
}

/**
 * Builds failc's command line; each action stores its exit code in `result.code`.
 *
 * @param result Receives the exit code of the action that ran.
 * @returns The commander program.
 */
function failcCommand(result: { code: number }) {
  const program = new Command()
    .name("failc")
    .description("Get, set, list and delete services on a faild.")
    .option("--url <url>", "faild URL (default: $FAILD_URL or " + DEFAULT_URL + ")")
    .option("--key <community>", "sign requests with this community (visible in ps: prefer a file)")
    .option("--key-file <file>", "read the community from this file (first line)")
    .option("--timeout <ms>", "timeout of each request", parseTimeout, 5000)
    .option("--json", "print JSON instead of a table")
    .addHelpText(
      "after",
      `
Without --key or --key-file the community is read from $FAILOVER_KEY; without any key requests
go unsigned, which faild allows only for reads the community file opens with "-".
STATE is UP, RECOVER or FAIL. Options may come before or after the command.
${EXIT_HELP}`,
    )
    .exitOverride()
    .showSuggestionAfterError();

  const run = async (
    action: (client: FaildClient, json: boolean, colour: boolean) => Promise<void>,
  ) => {
    const o = program.opts();
    let client: FaildClient | undefined;
    try {
      const key = resolveKey({
        ...(o.key !== undefined ? { key: o.key } : {}),
        ...(o.keyFile !== undefined ? { keyFile: o.keyFile } : {}),
      });
      client = new FaildClient(o.url ?? envOr("FAILD_URL", DEFAULT_URL), {
        timeoutMs: o.timeout,
        ...(key !== undefined ? { key } : {}),
      });
      await action(client, o.json === true, o.json !== true && useColour());
      result.code = EXIT.ok;
    } catch (error) {
      result.code = exitCodeOf(error);
      console.error(`failc: ${(error as Error).message}`);
    } finally {
      client?.close();
    }
  };

  program.command("get").description("show one service").argument("<name>", "service name")
    .action(async (name) => {
      await run(async (client, json, colour) => {
        const r = await client.get(name);
        console.log(
          json ? JSON.stringify(r, null, 2) : recordTable(r, { now: Date.now(), colour }),
        );
      });
    });

  program.command("set").description("create a service or change its state")
    .argument("<name>", "service name")
    .argument("<state>", "UP, RECOVER or FAIL")
    .option("--detail <text>", "free text stored with the state (at most 512 characters)")
    .action(async (name, state, options) => {
      await run(async (client, json, colour) => {
        const upper = state.toUpperCase();
        if (upper !== "UP" && upper !== "RECOVER" && upper !== "FAIL") {
          throw new RangeError(`Invalid state "${state}": expected UP, RECOVER or FAIL`);
        }
        const r = await client.set(
          name,
          upper as ServiceState,
          options.detail !== undefined ? { detail: options.detail } : {},
        );
        console.log(
          json ? JSON.stringify(r, null, 2) : recordTable(r, { now: Date.now(), colour }),
        );
      });
    });

  program.command("list").description("show every service the key may read")
    .action(async () => {
      await run(async (client, json, colour) => {
        const l = await client.list();
        if (json) {
          console.log(JSON.stringify(l, null, 2));
          return;
        }
        console.log(
          `faild ${client.url}: host ${l.host}, boot ${l.bootId}, ` +
            `${l.services.length} service(s)`,
        );
        if (l.services.length > 0) console.log(servicesTable(l.services, { now: l.now, colour }));
      });
    });

  program.command("delete").description("remove a service").argument("<name>", "service name")
    .action(async (name) => {
      await run(async (client, json, colour) => {
        const r = await client.delete(name);
        console.log(
          json
            ? JSON.stringify(r, null, 2)
            : `deleted ${r.name}\n${recordTable(r, { now: Date.now(), colour })}`,
        );
      });
    });

  return program;
}

/**
 * Runs failc.
 *
 * @param args Command line arguments.
 * @returns The exit code: 0 ok, 1 not found, 2 usage, 3 unreachable, 4 auth refused, 5 other.
 *
 * @example
 * ```ts ignore
 * import { main } from "./failc.ts";
 * const code = await main(["--url", "http://127.0.0.1:7100", "list"]);
 * ```
 */
export async function main(args: string[]): Promise<number> {
  const result = { code: EXIT.usage as number };
  const program = failcCommand(result);
  for (const c of program.commands) c.exitOverride();
  try {
    await program.parseAsync(args, { from: "user" });
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === "commander.helpDisplayed" || error.code === "commander.version") {
        return EXIT.ok;
      }
      return EXIT.usage;
    }
    console.error(`failc: ${(error as Error).message}`);
    return EXIT.usage;
  }
  return result.code;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
