/**
 * The `tcp` check: a TCP connection to host:port is accepted within the timeout.
 *
 * @module
 */
import type { CheckKindDef, CheckResult } from "./_types.ts";
import { abortPromise, errorText, parseHost, parsePort } from "./_util.ts";

/**
 * Opens a TCP connection, then closes it.
 *
 * @param target Host name or address, and port.
 * @param signal Aborts the attempt.
 * @returns The connection time, or why it failed.
 *
 * @example
 * ```ts ignore
 * import { probeTcp } from "./tcp.ts";
 * console.log(await probeTcp({ host: "127.0.0.1", port: 22 }, AbortSignal.timeout(1000)));
 * ```
 */
export async function probeTcp(
  target: { host: string; port: number },
  signal: AbortSignal,
): Promise<CheckResult> {
  const { host, port } = target;
  const started = performance.now();
  const pending = Deno.connect({ hostname: host, port, transport: "tcp" });
  const abort = abortPromise(signal);
  try {
    const conn = await Promise.race([pending, abort.promise]);
    conn.close();
    const ms = performance.now() - started;
    return { ok: true, detail: `connected to ${host}:${port}`, latencyMs: ms };
  } catch (e) {
    // A connect that succeeds after we gave up must not leak.
    pending.then((c) => c.close(), () => {});
    return {
      ok: false,
      detail: `cannot connect to ${host}:${port}: ${errorText(e)}`,
      latencyMs: null,
    };
  } finally {
    abort.dispose();
  }
}

/** The `tcp` check kind: `tcp host=H port=P`. */
export const tcpCheck: CheckKindDef = {
  summary: "a TCP connection to host:port is accepted",
  options: {
    host: { help: "host name or IP address to connect to", required: true, parse: parseHost },
    port: { help: "TCP port, 1 to 65535", required: true, parse: parsePort },
  },
  takesArgv: false,
  validate: () => ({ errors: [], warnings: [] }),
  target: (v) => `${v.host}:${v.port}`,
  create: (v) => ({
    run: (signal) => probeTcp({ host: v.host as string, port: v.port as number }, signal),
  }),
};
