/**
 * failstat: dump the state of one or several faild at once (queried in parallel), as tables or
 * JSON, with each faild's reachability.
 *
 * ```sh
 * failstat --key-file /etc/failover/key http://10.0.0.1:7100 http://10.0.0.2:7100
 * failstat --json http://127.0.0.1:7100
 * ```
 *
 * @module
 */
import { FaildClient } from "../lib/client.ts";
import * as cli from "../lib/cli.ts";
import type { ServiceRecord } from "../lib/types.ts";
import { ageText, servicesTable, useColour } from "./_faild_table.ts";

/** What failstat reports for one faild. */
export interface FaildStatus {
  /** The URL asked. */
  url: string;
  /** Whether it answered both the health and the list request. */
  reachable: boolean;
  /** The error when it did not, else `null`. */
  error: string | null;
  /** Exit code of the error (`lib/cli.ts`: 1, 69 or 77), 0 when reachable. */
  code: number;
  /** Its host name, or `null`. */
  host: string | null;
  /** Its boot id, or `null`. */
  bootId: string | null;
  /** Its version, or `null`. */
  version: string | null;
  /** Its uptime in ms, or `null`. */
  uptimeMs: number | null;
  /** Its clock at the answer (ms since the epoch), or `null`. */
  now: number | null;
  /** Round-trip time of the list request in ms, or `null`. */
  latencyMs: number | null;
  /** The services the key may read. */
  services: ServiceRecord[];
}

/**
 * Asks several faild for their health and services, in parallel.
 *
 * @param urls The faild URLs.
 * @param options Key and timeout.
 * @returns One status per URL, in the order given.
 *
 * @example
 * ```ts ignore
 * import { collectStatus } from "./failstat.ts";
 * const [s] = await collectStatus(["http://127.0.0.1:7100"], { timeoutMs: 2000 });
 * console.log(s.reachable);
 * ```
 */
export async function collectStatus(
  urls: string[],
  options: { key?: string; timeoutMs?: number } = {},
): Promise<FaildStatus[]> {
  return await Promise.all(urls.map(async (url): Promise<FaildStatus> => {
    const status: FaildStatus = {
      url,
      reachable: false,
      error: null,
      code: 0,
      host: null,
      bootId: null,
      version: null,
      uptimeMs: null,
      now: null,
      latencyMs: null,
      services: [],
    };
    let client: FaildClient | undefined;
    try {
      client = new FaildClient(url, {
        ...(options.key !== undefined ? { key: options.key } : {}),
        ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
      });
      const health = await client.health();
      const t0 = performance.now();
      const list = await client.list();
      status.latencyMs = Math.round((performance.now() - t0) * 100) / 100;
      Object.assign(status, {
        reachable: true,
        host: list.host,
        bootId: list.bootId,
        version: health.version,
        uptimeMs: health.uptimeMs,
        now: list.now,
        services: list.services,
      });
    } catch (error) {
      status.error = (error as Error).message;
      status.code = cli.exitCodeOf(error);
    } finally {
      client?.close();
    }
    return status;
  }));
}

/**
 * Renders statuses for people.
 *
 * @param statuses What {@linkcode collectStatus} returned.
 * @param colour Whether to colour states.
 * @returns The text.
 */
export function renderStatus(statuses: FaildStatus[], colour: boolean): string {
  const out: string[] = [];
  for (const s of statuses) {
    if (!s.reachable) {
      out.push(`${s.url}: UNREACHABLE: ${s.error}`);
      continue;
    }
    out.push(
      `${s.url}: host ${s.host}, faild ${s.version}, up ${ageText(s.uptimeMs ?? 0)}, boot ${
        s.bootId?.slice(0, 8)
      }, ${s.services.length} service(s), ${s.latencyMs} ms`,
    );
    if (s.services.length > 0) {
      out.push(servicesTable(s.services, { now: s.now ?? Date.now(), colour }));
    }
  }
  return out.join("\n");
}

/** The text of `failstat --help`. */
export const HELP = `Usage: failstat [options] URL...

Dumps the state of one or several faild at once (queried in parallel), e.g.
failstat http://10.0.0.1:7100 http://10.0.0.2:7100

Options:
${cli.sharedHelp(["key", "key-file", "timeout"])} (default 3000)
${cli.sharedHelp(["json"])}: an array with one object per faild
${cli.sharedHelp(["help"])}

Without --key or --key-file the community is read from $FAILOVER_KEY.
The first failing URL decides the exit code; the others are still shown.

${
  cli.exitCodesHelp([
    [cli.EXIT.ok, "every faild answered"],
    [cli.EXIT.failure, "a faild refused the request (4xx)"],
    [cli.EXIT.usage, null],
    [cli.EXIT.unavailable, "a faild was unreachable, or its answer was not understood"],
    [cli.EXIT.auth, "a faild refused the key, or its answer was not signed with it"],
  ])
}`;

/**
 * Runs failstat.
 *
 * @param args Command line arguments.
 * @returns The exit code (see {@linkcode HELP}).
 *
 * @example
 * ```ts ignore
 * import { main } from "./failstat.ts";
 * const code = await main(["http://127.0.0.1:7100"]);
 * ```
 */
export async function main(args: string[]): Promise<number> {
  let urls: string[];
  let timeoutMs: number;
  let key: string | undefined;
  let json: boolean;
  try {
    const { values: o, positionals } = cli.parseCommandLine("failstat", args, {
      shared: ["key", "key-file", "timeout", "json"],
    });
    if (o.help) {
      console.log(HELP);
      return cli.EXIT.ok;
    }
    if (positionals.length === 0) {
      throw new cli.UsageError("Missing URL: give at least one faild URL");
    }
    urls = positionals;
    timeoutMs = cli.timeoutOption(o.timeout, { defaultMs: 3000 });
    key = cli.keyOption(o);
    json = o.json === true;
    for (const u of urls) {
      try {
        new FaildClient(u).close();
      } catch (error) {
        throw new cli.UsageError((error as Error).message);
      }
    }
  } catch (error) {
    console.error(`failstat: ${(error as Error).message}`);
    return cli.exitCodeOf(error);
  }
  const statuses = await collectStatus(urls, {
    timeoutMs,
    ...(key !== undefined ? { key } : {}),
  });
  if (json) console.log(JSON.stringify(statuses, null, 2));
  else console.log(renderStatus(statuses, useColour()));
  return statuses.find((s) => !s.reachable)?.code ?? cli.EXIT.ok;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
