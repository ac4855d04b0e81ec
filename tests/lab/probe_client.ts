/**
 * The lab's client: connects to `--target` every `--every` ms (attempts overlap, each with its own
 * `--timeout`), reads the one-line answer (the name of the host that served), and prints one line
 * per attempt on stdout:
 *
 * ```text
 * <start ms since epoch> <duration ms> <1|0> <answer or -> <error code or ->
 * ```
 *
 * Run inside the client namespace; stops on stdin EOF, SIGTERM or after `--max-life` ms.
 *
 * ```sh
 * ip netns exec NS deno run --allow-net tests/lab/probe_client.ts --target 198.18.7.100:8080
 * ```
 *
 * @module
 */
import { stopOnEndOfLife } from "./_lifetime.ts";
import { parseArgs } from "node:util";

function parseTarget(text: string | undefined): { hostname: string; port: number } | null {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(text ?? "");
  if (!m) return null;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return null;
  return { hostname: m[1] ?? "", port };
}

async function attempt(
  hostname: string,
  port: number,
  timeoutMs: number,
): Promise<{ ok: boolean; who: string; error: string }> {
  const signal = AbortSignal.timeout(timeoutMs);
  let conn: Deno.TcpConn | null = null;
  try {
    conn = await Deno.connect({ hostname, port, signal });
    let got = "";
    const reader = conn.readable.getReader();
    const onAbort = () => reader.cancel().catch(() => {});
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      while (!got.includes("\n") && got.length < 100) {
        const { value, done } = await reader.read();
        if (done || !value) break;
        got += new TextDecoder().decode(value);
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      reader.releaseLock();
    }
    const who = got.split("\n")[0]?.trim() ?? "";
    if (!who) return { ok: false, who: "-", error: signal.aborted ? "timeout" : "empty" };
    return { ok: true, who, error: "-" };
  } catch (e) {
    const err = e as Error;
    const code = signal.aborted ? "timeout" : (err.name || "error").replace(/\s+/g, "_");
    return { ok: false, who: "-", error: code };
  } finally {
    try {
      conn?.close();
    } catch {
      // Closed already.
    }
  }
}

/**
 * Runs the probe until stopped.
 *
 * @param args Command-line arguments.
 * @returns Exit code.
 */
export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      target: { type: "string" },
      every: { type: "string", default: "10" },
      timeout: { type: "string", default: "500" },
      "max-inflight": { type: "string", default: "100" },
      "max-life": { type: "string", default: "1800000" },
    },
  });
  const target = parseTarget(values.target);
  if (!target) {
    console.error(`Invalid --target: ${values.target}: expected IPv4:port`);
    return 2;
  }
  const every = Number(values.every);
  const timeoutMs = Number(values.timeout);
  const maxInflight = Number(values["max-inflight"]);
  if (!(every >= 1 && timeoutMs >= 1 && maxInflight >= 1)) {
    console.error("Invalid --every, --timeout or --max-inflight: expected positive numbers");
    return 2;
  }
  let running = true;
  const stop = () => {
    running = false;
  };
  const endLife = stopOnEndOfLife(Number(values["max-life"]), stop);
  const out = Deno.stdout.writable.getWriter();
  const enc = new TextEncoder();
  let inflight = 0;
  const pending = new Set<Promise<void>>();
  let next = Date.now();
  while (running) {
    if (inflight < maxInflight) {
      inflight++;
      const start = Date.now();
      const p = attempt(target.hostname, target.port, timeoutMs).then(async (r) => {
        inflight--;
        const line = `${start} ${Date.now() - start} ${r.ok ? 1 : 0} ${r.who} ${r.error}\n`;
        await out.write(enc.encode(line)).catch(stop);
      });
      pending.add(p);
      p.finally(() => pending.delete(p));
    }
    next += every;
    const wait = next - Date.now();
    if (wait < -every * 10) next = Date.now(); // Fell far behind (machine stalled): don't burst.
    await new Promise((r) => setTimeout(r, Math.max(0, wait)));
  }
  await Promise.allSettled([...pending]);
  endLife();
  await out.close().catch(() => {});
  Deno.exit(0);
}

if (import.meta.main) Deno.exit(await main(Deno.args));
