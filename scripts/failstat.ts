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
import { Command, CommanderError } from "@commander-js/extra-typings";
import { FaildClient, resolveKey } from "../lib/client.ts";
import type { ServiceRecord } from "../lib/types.ts";
import { ageText, EXIT, exitCodeOf, servicesTable, useColour } from "./_faild_table.ts";

/** What failstat reports for one faild. */
export interface FaildStatus {
  /** The URL asked. */
  url: string;
  /** Whether it answered both the health and the list request. */
  reachable: boolean;
  /** The error when it did not, else `null`. */
  error: string | null;
  /** Exit code class of the error (see failc), 0 when reachable. */
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
      status.code = exitCodeOf(error);
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

/**
 * Runs failstat.
 *
 * @param args Command line arguments.
 * @returns 0 when every faild answered, else the exit code of the first failure (see failc:
 * 3 unreachable, 4 auth refused, 5 other), 2 on a usage error.
 *
 * @example
 * ```ts ignore
 * import { main } from "./failstat.ts";
 * const code = await main(["http://127.0.0.1:7100"]);
 * ```
 */
export async function main(args: string[]): Promise<number> {
  let result = EXIT.usage as number;
  const program = new Command()
    .name("failstat")
    .description("Dump the state of one or several faild at once (queried in parallel).")
    .argument("<url...>", "faild URLs, e.g. http://10.0.0.1:7100")
    .option("--key <community>", "sign requests with this community (visible in ps: prefer a file)")
    .option("--key-file <file>", "read the community from this file (first line)")
    .option("--timeout <ms>", "timeout of each request (default 3000)")
    .option("--json", "print JSON: an array with one object per faild")
    .addHelpText(
      "after",
      `
Without --key or --key-file the community is read from $FAILOVER_KEY.
Exit codes: 0 every faild answered; 3 one was unreachable; 4 one refused the key; 5 other error
answer; 2 usage error. The first failing URL decides the code; the others are still shown.`,
    )
    .exitOverride()
    .action(async (urls, o) => {
      let timeoutMs = 3000;
      if (o.timeout !== undefined) {
        timeoutMs = Number(o.timeout);
        if (!/^\d+$/.test(o.timeout) || timeoutMs < 1) {
          console.error(`failstat: Invalid --timeout "${o.timeout}": expected milliseconds`);
          result = EXIT.usage;
          return;
        }
      }
      let key: string | undefined;
      try {
        key = resolveKey({
          ...(o.key !== undefined ? { key: o.key } : {}),
          ...(o.keyFile !== undefined ? { keyFile: o.keyFile } : {}),
        });
        for (const u of urls) new FaildClient(u).close();
      } catch (error) {
        console.error(`failstat: ${(error as Error).message}`);
        result = EXIT.usage;
        return;
      }
      const statuses = await collectStatus(urls, {
        timeoutMs,
        ...(key !== undefined ? { key } : {}),
      });
      if (o.json) console.log(JSON.stringify(statuses, null, 2));
      else console.log(renderStatus(statuses, useColour()));
      result = statuses.find((s) => !s.reachable)?.code ?? EXIT.ok;
    });
  try {
    await program.parseAsync(args, { from: "user" });
  } catch (error) {
    if (error instanceof CommanderError) {
      return error.code === "commander.helpDisplayed" || error.code === "commander.version"
        ? EXIT.ok
        : EXIT.usage;
    }
    console.error(`failstat: ${(error as Error).message}`);
    return EXIT.usage;
  }
  return result;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
