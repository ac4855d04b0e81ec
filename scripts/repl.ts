/**
 * `deno task repl`: a Deno REPL with the failover client and helpers preloaded, to inspect any
 * faild or failsh by hand.
 *
 * ```text
 * > const a = faild("http://127.0.0.1:7100", "s3cret")   // a FaildClient
 * > await a.list()
 * > await services(a)                                       // a table of its services
 * > await snapshot("http://127.0.0.1:1848")                 // a failsh's monitor snapshot
 * > decide({ ... })                                         // the decision function
 * ```
 *
 * @module
 */
import { FaildClient, PeerUnreachableError, resolveKey } from "../lib/client.ts";
import { EXIT, exitCodeOf, exitCodesHelp, parseCommandLine } from "../lib/cli.ts";
import { decide } from "../shell/scheduler/decide.ts";
import { parseScenario, simulate } from "../shell/simulate.ts";
import type { FailshSnapshot } from "../lib/types.ts";

/** The helpers the REPL puts in its global scope. */
export interface ReplHelpers {
  /** The faild client class. */
  FaildClient: typeof FaildClient;
  /** The error a client throws for an unreachable faild. */
  PeerUnreachableError: typeof PeerUnreachableError;
  /** A client of a faild: `faild(url, key?)`; the key defaults to `$FAILOVER_KEY`. */
  faild(url: string, key?: string): FaildClient;
  /** Prints a faild's services as a table and returns them. */
  services(client: FaildClient): Promise<unknown[]>;
  /** A failsh's monitor snapshot: `snapshot("http://127.0.0.1:1848")`. */
  snapshot(url?: string): Promise<FailshSnapshot>;
  /** A failsh's metrics text. */
  metrics(url?: string): Promise<string>;
  /** The pure decision function. */
  decide: typeof decide;
  /** Runs a decision simulation on a declaration and a scenario. */
  simulate: typeof simulate;
  /** Parses a scenario (JSON text). */
  parseScenario: typeof parseScenario;
}

/**
 * The helpers preloaded in the REPL.
 *
 * @returns The helpers, by global name.
 *
 * @example
 * ```ts
 * import { helpers } from "./repl.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(Object.keys(helpers()).includes("faild"), true);
 * ```
 */
export function helpers(): ReplHelpers {
  return {
    FaildClient,
    PeerUnreachableError,
    faild(url: string, key?: string): FaildClient {
      let k = key;
      if (k === undefined) {
        try {
          k = resolveKey({});
        } catch {
          k = undefined;
        }
      }
      return new FaildClient(url, k === undefined ? {} : { key: k });
    },
    async services(client: FaildClient): Promise<unknown[]> {
      const list = await client.list();
      const rows = list.services.map((s) => ({
        name: s.name,
        state: s.state,
        changes: s.changes,
        lastChange: new Date(s.lastChange).toISOString(),
        setBy: s.setBy,
        detail: s.detail,
      }));
      console.table(rows);
      return rows;
    },
    async snapshot(url = "http://127.0.0.1:1848"): Promise<FailshSnapshot> {
      const r = await fetch(`${url}/v1/snapshot`, { signal: AbortSignal.timeout(5000) });
      if (!r.ok) throw new Error(`Cannot read ${url}/v1/snapshot: status ${r.status}`);
      return await r.json() as FailshSnapshot;
    },
    async metrics(url = "http://127.0.0.1:1848"): Promise<string> {
      const r = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5000) });
      return await r.text();
    },
    decide,
    simulate,
    parseScenario,
  };
}

/** The code the REPL evaluates at start. */
export function preloadCode(): string {
  const self = new URL(import.meta.url).href;
  return `const __failover = await import(${JSON.stringify(self)});` +
    `Object.assign(globalThis, __failover.helpers());` +
    `console.log("failover REPL: faild(url, key?), services(client), snapshot(url), metrics(url), decide(input), simulate(decl, scenario), FaildClient");`;
}

/**
 * Starts the REPL.
 *
 * @param args `--help`, or extra arguments passed to `deno repl`.
 * @returns The REPL's exit code.
 *
 * @example
 * ```ts ignore
 * import { main } from "./repl.ts";
 * Deno.exit(await main([]));
 * ```
 */
export async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseCommandLine("repl", args);
  } catch (error) {
    console.error(`repl: ${(error as Error).message}`);
    return exitCodeOf(error);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(`Usage: deno task repl [-- ARGS...]

A Deno REPL with the failover client preloaded:
  faild(url, key?)      a FaildClient (key defaults to $FAILOVER_KEY)
  services(client)      print a faild's services as a table
  snapshot(url)         a failsh monitor snapshot (default http://127.0.0.1:1848)
  metrics(url)          a failsh's Prometheus metrics
  decide(input)         the pure decision function (docs/decisions.md)
  simulate(decl, s)     a decision simulation in fake time
  FaildClient, PeerUnreachableError

Arguments after -- go to deno repl.

${exitCodesHelp([[EXIT.ok, "the REPL ended (else its own exit code)"], [EXIT.usage, null]])}`);
    return EXIT.ok;
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: ["repl", "-A", `--eval=${preloadCode()}`, ...positionals.map(String)],
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  // Ctrl-C belongs to the REPL (it clears the line); do not let it end this process.
  const ignore = () => {};
  Deno.addSignalListener("SIGINT", ignore);
  try {
    return (await child.status).code;
  } finally {
    Deno.removeSignalListener("SIGINT", ignore);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
