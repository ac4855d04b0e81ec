/**
 * The `ping` check: one ICMP echo through the system's `ping -c 1 -W SECONDS -n HOST`.
 *
 * @module
 */
import type { CheckKindDef, CheckResult } from "./_types.ts";
import { errorText, parseHost } from "./_util.ts";
import { runBounded } from "./_process.ts";

/** The ping program run (iputils). */
export const PING_PROGRAM = "/usr/bin/ping";

/**
 * Builds the argv of one ping: `-W` is the check's timeout in seconds (fractions allowed).
 *
 * @param host The host.
 * @param timeoutMs The check's timeout.
 * @returns The argv.
 *
 * @example
 * ```ts
 * import { pingArgv } from "./ping.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(pingArgv("198.18.0.1", 500).join(" "), "/usr/bin/ping -c 1 -W 0.5 -n 198.18.0.1");
 * ```
 */
export function pingArgv(host: string, timeoutMs: number): string[] {
  const seconds = Math.max(0.001, timeoutMs / 1000);
  return [PING_PROGRAM, "-c", "1", "-W", String(Number(seconds.toFixed(3))), "-n", host];
}

/**
 * Pings once.
 *
 * @param options Host and time limit.
 * @param signal Kills ping when it aborts.
 * @returns The check result, with the round-trip time ping printed.
 */
export async function probePing(
  options: { host: string; timeoutMs: number },
  signal: AbortSignal,
): Promise<CheckResult> {
  try {
    const out = await runBounded(pingArgv(options.host, options.timeoutMs), {
      timeoutMs: options.timeoutMs + 500,
      signal,
    });
    const rtt = /time[=<]([0-9.]+) ?ms/.exec(out.stdout);
    const ms = rtt ? Number(rtt[1]) : null;
    if (out.code === 0) {
      return { ok: true, detail: `reply from ${options.host} in ${ms ?? "?"} ms`, latencyMs: ms };
    }
    if (out.timedOut) return { ok: false, detail: "no reply: timed out", latencyMs: null };
    const why = out.stderr.trim().split("\n")[0] || `no reply from ${options.host}`;
    return { ok: false, detail: `${why} (ping exit ${out.code})`, latencyMs: null };
  } catch (e) {
    return { ok: false, detail: `cannot run ${PING_PROGRAM}: ${errorText(e)}`, latencyMs: null };
  }
}

/** The `ping` check kind: `ping host=H`. */
export const pingCheck: CheckKindDef = {
  summary: "the host answers one ICMP echo (system ping -c 1 -W timeout)",
  options: {
    host: { help: "host name or IP address to ping", required: true, parse: parseHost },
  },
  takesArgv: false,
  validate: () => ({ errors: [], warnings: [] }),
  target: (v) => String(v.host),
  create: (v, _argv, context) => ({
    run: (signal) => probePing({ host: v.host as string, timeoutMs: context.timeoutMs }, signal),
  }),
};
