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
import { FaildClient } from "../lib/client.ts";
import * as cli from "../lib/cli.ts";
import type { ServiceState } from "../lib/types.ts";
import { recordTable, servicesTable, useColour } from "./_faild_table.ts";

/** The faild URL used when neither `--url` nor `FAILD_URL` is given. */
export const DEFAULT_URL = "http://127.0.0.1:7100";

function envOr(name: string, fallback: string): string {
  try {
    return Deno.env.get(name) ?? fallback;
  } catch {
    return fallback;
  }
}

/** The text of `failc --help`. */
export const HELP = `Usage: failc [options] get NAME
       failc [options] set NAME STATE [--detail TEXT]
       failc [options] list
       failc [options] delete NAME

Get, set, list and delete services on a faild.

Commands:
  get NAME                show one service
  set NAME STATE          create a service or change its state (STATE: UP, RECOVER or FAIL)
  list                    show every service the key may read
  delete NAME             remove a service

Options:
  --url URL               faild URL (default: $FAILD_URL or ${DEFAULT_URL})
${cli.sharedHelp(["key", "key-file", "timeout"])} (default 5000)
  --detail TEXT           with set: free text stored with the state (at most 512 characters)
${cli.sharedHelp(["json", "help"])}

Without --key or --key-file the community is read from $FAILOVER_KEY; without any key requests
go unsigned, which faild allows only for reads the community file opens with "-".
Options may come before or after the command.

${
  cli.exitCodesHelp([
    [cli.EXIT.ok, null],
    [cli.EXIT.failure, "service not found, or another refusal of faild (4xx)"],
    [cli.EXIT.usage, "usage error (bad option, name, state, URL or key file)"],
    [cli.EXIT.unavailable, "faild unreachable (refused, timeout, TLS) or a 5xx/garbled answer"],
    [cli.EXIT.auth, "authentication refused (401/403) or an unsigned/badly signed answer"],
  ])
}`;

const ARITY: Record<string, number> = { get: 1, set: 2, list: 0, delete: 1 };

/**
 * Runs failc.
 *
 * @param args Command line arguments.
 * @returns The exit code (see {@linkcode HELP}).
 *
 * @example
 * ```ts ignore
 * import { main } from "./failc.ts";
 * const code = await main(["--url", "http://127.0.0.1:7100", "list"]);
 * ```
 */
export async function main(args: string[]): Promise<number> {
  let client: FaildClient | undefined;
  try {
    const { values: o, positionals } = cli.parseCommandLine("failc", args, {
      options: { url: { type: "string" }, detail: { type: "string" } },
      shared: ["key", "key-file", "timeout", "json"],
    });
    if (o.help) {
      console.log(HELP);
      return cli.EXIT.ok;
    }
    const [command, ...rest] = positionals;
    if (command === undefined) {
      throw new cli.UsageError("Missing command: expected get, set, list or delete");
    }
    const arity = ARITY[command];
    if (arity === undefined) {
      throw new cli.UsageError(`Unknown command "${command}": expected get, set, list or delete`);
    }
    if (rest.length !== arity) {
      throw new cli.UsageError(
        `${command} takes ${arity} argument(s), got ${rest.length}: see failc --help`,
      );
    }
    if (o.detail !== undefined && command !== "set") {
      throw new cli.UsageError("--detail goes with set only");
    }
    const timeoutMs = cli.timeoutOption(o.timeout, { defaultMs: 5000 });
    const key = cli.keyOption(o);
    try {
      client = new FaildClient(o.url ?? envOr("FAILD_URL", DEFAULT_URL), {
        timeoutMs,
        ...(key !== undefined ? { key } : {}),
      });
    } catch (error) {
      throw new cli.UsageError((error as Error).message);
    }
    const json = o.json === true;
    const colour = !json && useColour();
    const show = (r: unknown, table: () => string) =>
      console.log(json ? JSON.stringify(r, null, 2) : table());
    const now = () => ({ now: Date.now(), colour });
    if (command === "get") {
      const r = await client.get(rest[0]!);
      show(r, () => recordTable(r, now()));
    } else if (command === "set") {
      const upper = rest[1]!.toUpperCase();
      if (upper !== "UP" && upper !== "RECOVER" && upper !== "FAIL") {
        throw new cli.UsageError(`Invalid state "${rest[1]}": expected UP, RECOVER or FAIL`);
      }
      const r = await client.set(
        rest[0]!,
        upper as ServiceState,
        o.detail !== undefined ? { detail: o.detail } : {},
      );
      show(r, () => recordTable(r, now()));
    } else if (command === "list") {
      const l = await client.list();
      show(l, () => {
        const head = `faild ${client!.url}: host ${l.host}, boot ${l.bootId}, ` +
          `${l.services.length} service(s)`;
        return l.services.length > 0
          ? `${head}\n${servicesTable(l.services, { now: l.now, colour })}`
          : head;
      });
    } else {
      const r = await client.delete(rest[0]!);
      show(r, () => `deleted ${r.name}\n${recordTable(r, now())}`);
    }
    return cli.EXIT.ok;
  } catch (error) {
    console.error(`failc: ${(error as Error).message}`);
    // A bad name or state is refused by the client before anything is sent.
    if (error instanceof RangeError) return cli.EXIT.usage;
    return cli.exitCodeOf(error);
  } finally {
    client?.close();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
