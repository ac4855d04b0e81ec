/**
 * `hc`: the health checker. Reads an Hcfile, runs its checks (dependencies first) with rise/fall
 * thresholds, runs the actions bound to state changes (set a service in faild, run a repair
 * program, POST a webhook) and serves its status over HTTP.
 *
 * ```text
 * hc [options] HCFILE
 *   --check            validate HCFILE and exit: 0 ok, 1 warnings, 2 errors
 *   --once             run every check once (dependencies first), print, exit 0 if all UP else 1
 *   --json             with --once or --check: print JSON
 *   --listen H:P       serve the status API (overrides the Hcfile's "listen")
 *   --name NAME        this instance's name (default: the Hcfile's "name", else the host name)
 *   --log-level LEVEL  error, warn, info (default), debug, trace
 * ```
 *
 * @module
 */
import Table from "cli-table3";
import {
  applyLogLevels,
  EXIT,
  exitCodesHelp,
  parseCommandLine,
  sharedHelp,
  UsageError,
} from "../../lib/cli.ts";
import { parseHostPort } from "../../lib/net.ts";
import { logger } from "../../lib/log.ts";
import { type HcSnapshot, HealthChecker } from "./checker.ts";
import { type Diagnostic, formatDiagnostic, loadHcfile } from "./hcfile.ts";
import { serveStatus } from "./server.ts";
import { errorText } from "./checks/_util.ts";
import { CHECK_KINDS, CHECKS } from "./checks/mod.ts";

/** The text of `hc --help`. */
export const USAGE = `Usage: hc [options] HCFILE

Runs the health checks of HCFILE (see docs/hc.md for the grammar).

Options:
  --check                 validate HCFILE and exit: 0 ok, 1 warnings only, 2 errors
  --once                  run every check once, dependencies first; exit 0 if all UP, else 1
  --json                  with --check or --once: print JSON
  --listen HOST:PORT      serve the status API (default: the Hcfile's "listen" line, else none)
  --name NAME             this instance's name (default: the Hcfile's "name", else the host name)
${sharedHelp(["log-level", "help"])}

Signals: SIGHUP reloads HCFILE (kept when it has errors; unchanged checks keep their state),
SIGUSR1 writes the state of every check to the log, SIGINT/SIGTERM stop.

Check kinds:
${CHECK_KINDS.map((k) => `  ${k.padEnd(8)} ${CHECKS[k].summary}`).join("\n")}

${
  exitCodesHelp([
    [EXIT.ok, "--check: no problem; --once: every check UP; else stopped by a signal"],
    [EXIT.failure, "--check: warnings only; --once: a check is not UP; could not start"],
    [EXIT.checkErrors, "HCFILE has errors (--check, or refused at start)"],
    [EXIT.usage, null],
  ])
}`;

/**
 * Severity exit code of a list of diagnostics: 0 none, 1 warnings only, 2 errors.
 *
 * @param diagnostics The diagnostics.
 * @returns The exit code.
 *
 * @example
 * ```ts
 * import { severityCode } from "./hc.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(severityCode([]), 0);
 * ```
 */
export function severityCode(diagnostics: readonly Diagnostic[]): number {
  if (diagnostics.some((d) => d.severity === "error")) return 2;
  return diagnostics.length > 0 ? 1 : 0;
}

/**
 * A table of checks for a terminal.
 *
 * @param s A snapshot.
 * @returns The table text.
 */
export function renderTable(s: HcSnapshot): string {
  const table = new Table({
    head: ["check", "state", "root cause", "kind", "target", "latency", "detail"],
    style: { head: [], border: [] },
  });
  for (const c of s.checks) {
    table.push([
      c.name,
      c.state,
      c.rootCause ?? "",
      c.kind,
      c.target.slice(0, 40),
      c.latencyMs === null ? "" : `${Math.round(c.latencyMs)} ms`,
      (c.lastResult?.detail ?? "").slice(0, 60),
    ]);
  }
  return table.toString();
}

function waitForSignal(): Promise<string> {
  return new Promise((resolve) => {
    const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
    const handlers = signals.map((sig) => {
      const h = (): void => {
        signals.forEach((s, i) => Deno.removeSignalListener(s, handlers[i]!));
        resolve(sig);
      };
      Deno.addSignalListener(sig, h);
      return h;
    });
  });
}

/**
 * Runs the hc command line.
 *
 * @param args Command-line arguments.
 * @returns The exit code.
 *
 * @example
 * ```ts ignore
 * import { main } from "./hc.ts";
 * Deno.exit(await main(["--check", "samples/hc/Hcfile"]));
 * ```
 */
export async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseCommandLine("hc", args, {
      options: {
        check: { type: "boolean" },
        once: { type: "boolean" },
        listen: { type: "string" },
        name: { type: "string" },
      },
      shared: ["json", "log-level"],
    });
    if (!parsed.values.help && parsed.positionals.length !== 1) {
      throw new UsageError(`Expected exactly one HCFILE, got ${parsed.positionals.length}`);
    }
    applyLogLevels(logger, parsed.values["log-level"]);
  } catch (e) {
    console.error(`hc: ${errorText(e)}\nRun hc --help for the options.`);
    return EXIT.usage;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return EXIT.ok;
  }
  const file = positionals[0]!;
  const { config, diagnostics } = await loadHcfile(file);
  const code = severityCode(diagnostics);
  if (values.check) {
    const errors = diagnostics.filter((d) => d.severity === "error").length;
    if (values.json) {
      console.log(
        JSON.stringify({ file, checks: config.checks.length, errors, diagnostics }, null, 2),
      );
    } else {
      for (const d of diagnostics) console.log(formatDiagnostic(d));
      console.log(
        `${file}: ${config.checks.length} checks, ${errors} errors, ${
          diagnostics.length - errors
        } warnings`,
      );
    }
    return code;
  }
  for (const d of diagnostics) console.error(formatDiagnostic(d));
  if (code === EXIT.checkErrors) {
    console.error(`hc: ${file} has errors: fix them (hc --check ${file}) before starting`);
    return EXIT.checkErrors;
  }
  const options = values.name !== undefined ? { name: values.name } : {};
  const hc = new HealthChecker(config, options);
  if (values.once) {
    let snapshot: HcSnapshot;
    try {
      snapshot = await hc.runOnce();
    } catch (e) {
      console.error(`hc: ${errorText(e)}`);
      await hc.stop();
      return EXIT.failure;
    }
    await hc.stop();
    console.log(values.json ? JSON.stringify(snapshot, null, 2) : renderTable(snapshot));
    return snapshot.checks.every((c) => c.state === "UP") ? 0 : 1;
  }
  const listen = values.listen ?? config.listen;
  let addr: { hostname: string; port: number } | null = null;
  if (listen !== null) {
    try {
      addr = parseHostPort(listen, { allowPortZero: true });
    } catch (e) {
      console.error(`hc: --listen ${listen}: ${errorText(e)}`);
      return EXIT.usage;
    }
  }
  try {
    hc.start();
  } catch (e) {
    console.error(`hc: Cannot start: ${errorText(e)}`);
    await hc.stop();
    return EXIT.failure;
  }
  let server = null;
  if (addr) {
    try {
      server = serveStatus(hc, addr);
      logger.info("hc", "status API listening", { url: server.url });
    } catch (e) {
      console.error(`hc: Cannot listen on ${listen}: ${errorText(e)}`);
      await hc.stop();
      return EXIT.failure;
    }
  }
  let current = hc;
  // SIGHUP: reload (one at a time); SIGUSR1: dump the state to the log.
  let reloading: Promise<void> = Promise.resolve();
  const onHup = (): void => {
    reloading = reloading.then(async () => {
      current = await reload(file, current, options);
      server?.replace(current);
    });
  };
  const onUsr1 = (): void => {
    logger.info("hc", "state dump", { snapshot: current.snapshot() });
  };
  Deno.addSignalListener("SIGHUP", onHup);
  Deno.addSignalListener("SIGUSR1", onUsr1);
  const sig = await waitForSignal();
  Deno.removeSignalListener("SIGHUP", onHup);
  Deno.removeSignalListener("SIGUSR1", onUsr1);
  logger.info("hc", "stopping", { signal: sig });
  await reloading;
  await server?.shutdown();
  await current.stop();
  return 0;
}

/**
 * Reloads the Hcfile: when it has errors, or a key file cannot be read, the running engine is
 * kept (and the reason logged); otherwise it is stopped and a new one started, in which every
 * check with an unchanged line, dependencies and timing keeps its state.
 *
 * @param file The Hcfile.
 * @param running The running engine.
 * @param options Engine options (name).
 * @returns The engine running afterwards.
 */
export async function reload(
  file: string,
  running: HealthChecker,
  options: { name?: string },
): Promise<HealthChecker> {
  const { config, diagnostics } = await loadHcfile(file);
  for (const d of diagnostics) {
    logger.log(d.severity === "error" ? "error" : "warn", "hc", formatDiagnostic(d));
  }
  const errors = diagnostics.filter((d) => d.severity === "error").length;
  if (errors > 0) {
    logger.error("hc", "reload refused: the Hcfile has errors; the running checks go on", {
      errors,
    });
    return running;
  }
  try {
    new HealthChecker(config, options).prepare();
  } catch (e) {
    logger.error("hc", "reload refused: the running checks go on", { error: errorText(e) });
    return running;
  }
  await running.stop();
  const next = new HealthChecker(config, { ...options, previous: running });
  next.start();
  const kept = next.snapshot().checks.filter((c) => c.state !== "PENDING").length;
  logger.info("hc", "reloaded", { checks: config.checks.length, kept });
  return next;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
