/**
 * The loopback demo's "service": a tiny HTTP server on the virtual address (default
 * `127.0.0.100:18080`) that answers with the name of the host serving it. The failover script
 * starts and stops it through the policy-listed program `demo-service` (this file run by deno):
 *
 * ```sh
 * deno run --allow-all service.ts start alpha /tmp/demo-state   # start, wait until it listens
 * deno run --allow-all service.ts stop alpha /tmp/demo-state    # stop it, wait until it is gone
 * deno run --allow-all service.ts serve alpha /tmp/demo-state   # (the server itself)
 * ```
 *
 * `start` runs the server as a background process and records its pid in
 * `STATEDIR/ALPHA.pid`; it exits 0 once the server answers, 1 if it could not bind (the other host
 * still holds the address). `stop` is idempotent.
 *
 * @module
 */

/** Where the demo service listens. */
export const VIP = { hostname: "127.0.0.100", port: 18080 };

function pidFile(dir: string, host: string): string {
  return `${dir}/${host}.pid`;
}

function alive(pid: number): boolean {
  try {
    // A zombie (exited, not yet reaped by whoever adopted it) is not alive.
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return !/^\d+ \(.*\) [ZX]/.test(stat);
  } catch {
    try {
      Deno.kill(pid, "SIGCONT");
      return true;
    } catch {
      return false;
    }
  }
}

function readPid(dir: string, host: string): number | null {
  try {
    const pid = Number(Deno.readTextFileSync(pidFile(dir, host)).trim());
    return Number.isInteger(pid) && pid > 1 ? pid : null;
  } catch {
    return null;
  }
}

async function answers(host: string, port: number): Promise<boolean> {
  try {
    const r = await fetch(`http://${VIP.hostname}:${port}/`, { signal: AbortSignal.timeout(500) });
    return (await r.text()).trim() === host;
  } catch {
    return false;
  }
}

async function start(host: string, dir: string, port: number): Promise<number> {
  await Deno.mkdir(dir, { recursive: true });
  const old = readPid(dir, host);
  if (old !== null && alive(old) && await answers(host, port)) return 0;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      `--allow-net=${VIP.hostname}:${port}`,
      `--allow-write=${dir}`,
      import.meta.filename!,
      "serve",
      host,
      dir,
      String(port),
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  child.unref();
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    if (await answers(host, port)) return 0;
    const st = await Promise.race([
      child.status,
      new Promise<null>((r) => setTimeout(() => r(null), 20)),
    ]);
    if (st !== null) {
      console.error(
        `demo service of ${host} exited with code ${st.code}: ${VIP.hostname}:${port} is taken?`,
      );
      return 1;
    }
  }
  try {
    child.kill("SIGKILL");
  } catch {
    // gone
  }
  console.error(`demo service of ${host} did not answer within 5 s`);
  return 1;
}

async function stop(host: string, dir: string): Promise<number> {
  const pid = readPid(dir, host);
  if (pid !== null && alive(pid)) {
    Deno.kill(pid, "SIGTERM");
    const deadline = Date.now() + 3000;
    while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    if (alive(pid)) Deno.kill(pid, "SIGKILL");
  }
  await Deno.remove(pidFile(dir, host)).catch(() => {});
  return 0;
}

function serve(host: string, dir: string, port: number): void {
  const server = Deno.serve(
    {
      hostname: VIP.hostname,
      port,
      onListen: () => Deno.writeTextFileSync(pidFile(dir, host), `${Deno.pid}\n`),
    },
    () => new Response(`${host}\n`, { headers: { connection: "close" } }),
  );
  Deno.addSignalListener("SIGTERM", () => {
    server.shutdown().finally(() => Deno.exit(0));
  });
}

/**
 * Runs the service command line.
 *
 * @param args `start|stop|serve HOST STATEDIR [PORT]`.
 * @returns The exit code.
 */
export async function main(args: string[]): Promise<number> {
  const [cmd, host, dir, portText] = args;
  const port = portText === undefined ? VIP.port : Number(portText);
  if (!host || !/^[a-z0-9-]+$/.test(host) || !dir?.startsWith("/") || !Number.isInteger(port)) {
    console.error("Usage: service.ts start|stop|serve HOST STATEDIR [PORT]");
    return 64;
  }
  switch (cmd) {
    case "start":
      return await start(host, dir, port);
    case "stop":
      return await stop(host, dir);
    case "serve":
      serve(host, dir, port);
      return -1;
    default:
      console.error(`Unknown command "${cmd}": expected start, stop or serve`);
      return 64;
  }
}

if (import.meta.main) {
  const code = await main(Deno.args);
  if (code >= 0) Deno.exit(code);
}
