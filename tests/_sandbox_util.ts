/**
 * Helpers of the sandbox integration tests: write a failover script and a policy into a
 * temporary directory, and collect what the sandboxed script logs.
 *
 * @module
 */
import { parsePolicy } from "../shell/sandbox/policy.ts";
import type { Policy } from "../shell/contract.ts";
import {
  createSandbox,
  type FailshSandbox,
  type SandboxOptions,
} from "../shell/sandbox/sandbox.ts";
import { Logger } from "../lib/log.ts";

/** URL of the root mod.ts, for generated scripts to import. */
export const MOD_URL = new URL("../mod.ts", import.meta.url).href;

/** A sandbox under test with its temporary directory and the script's logs. */
export interface Harness {
  dir: string;
  sandbox: FailshSandbox;
  policy: Policy;
  logs: { service: string | null; message: string }[];
  output: string[];
  /** The sandbox's own log lines (JSON), e.g. "killing the script's child". */
  events: Record<string, unknown>[];
  auditLines(): Record<string, unknown>[];
  close(): Promise<void>;
}

/**
 * Writes `script` (a module body; `MOD` in it is replaced by mod.ts's URL) and a policy made of
 * `policy` plus defaults, then creates (not starts) the sandbox.
 */
export async function makeHarness(
  script: string,
  policy: Record<string, unknown>,
  options: SandboxOptions = {},
): Promise<Harness> {
  const dir = await Deno.makeTempDir({ prefix: "failsh_sandbox_test_" });
  const scriptPath = `${dir}/failover.ts`;
  await Deno.writeTextFile(scriptPath, script.replaceAll("MOD", MOD_URL));
  const parsed = parsePolicy(
    JSON.stringify({ host: "alpha", netDriver: "simulated", monitor: null, ...policy }),
    `${dir}/policy.json`,
  );
  const logs: Harness["logs"] = [];
  const output: string[] = [];
  const events: Record<string, unknown>[] = [];
  const sandbox = createSandbox(scriptPath, parsed, {
    logger: new Logger({ sink: (line) => events.push(JSON.parse(line)) }),
    onLog: (message, { service }) => logs.push({ service, message }),
    onOutput: (line) => output.push(line),
    ...options,
  });
  return {
    dir,
    sandbox,
    policy: parsed,
    logs,
    output,
    events,
    auditLines() {
      try {
        return Deno.readTextFileSync(parsed.audit).trim().split("\n").filter((l) => l !== "")
          .map((l) => JSON.parse(l));
      } catch {
        return [];
      }
    },
    async close() {
      await sandbox.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** A handler invocation for tests. */
export function call(service: string, kind: "start" | "stop" | "reclaim" = "start") {
  return { service, kind, self: "alpha", reason: "test", peers: {} };
}

/**
 * Waits until `fn` returns something other than `null`/`false`, polling every 20 ms; fails
 * with `what` after `ms`.
 */
export async function until<T>(
  what: string,
  fn: () => T | null | false | Promise<T | null | false>,
  ms = 15_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const v = await fn();
    if (v !== null && v !== false) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
}

/** A process as `/proc/PID/stat` and `/proc/PID/status` show it. */
export interface ProcInfo {
  pid: number;
  /** The nice value. */
  nice: number;
  /** Threads. */
  threads: number;
  /** Resident memory, KiB. */
  rssKiB: number;
  /** `/proc/PID/limits`, e.g. `Max data size  1000  1000  bytes`. */
  limits: string;
  /** The program's arguments (`/proc/PID/cmdline`), e.g. `["prlimit", …]` before its exec. */
  argv: string[];
}

/**
 * The live (not zombie) direct children of this process: the sandboxed scripts. With `dir`, only
 * those whose command line names a file in it (one harness's children, not a process of an
 * earlier test still exiting).
 */
export function childProcesses(dir?: string): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // f[0] is field 3 (state), f[1] field 4 (ppid), f[16] field 19 (nice), f[17] threads.
      if (Number(f[1]) !== Deno.pid || f[0] === "Z") continue;
      const status = Deno.readTextFileSync(`/proc/${e.name}/status`);
      out.push({
        pid: Number(e.name),
        nice: Number(f[16]),
        threads: Number(f[17]),
        rssKiB: Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0),
        limits: Deno.readTextFileSync(`/proc/${e.name}/limits`),
        argv: Deno.readTextFileSync(`/proc/${e.name}/cmdline`).split("\0").filter((a) => a),
      });
      if (dir !== undefined && !out.at(-1)!.argv.some((a) => a.startsWith(`${dir}/`))) out.pop();
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Two hosts, the head of every hostile-script test's script (`MOD` is replaced by mod.ts). */
const HEADER = `
import { host, service } from "MOD";
host("alpha", { address: "127.0.0.1" });
host("beta", { address: "127.0.0.2" });
`;

/** One probe's outcome as {@linkcode probes}' script logs it. */
export type Probe = { ok: boolean; value?: string; name?: string; message?: string };

/**
 * A script whose service's start handler runs `body` (which calls `probe(name, fn)`) and logs
 * the outcomes as JSON.
 *
 * @param body The handler's code.
 * @param options `timeouts`: the service's handler time limit (default the script API's).
 * @returns The script's text.
 */
export function probes(body: string, options: { timeouts?: string } = {}): string {
  const timeouts = options.timeouts === undefined ? "" : `\n  timeouts: "${options.timeouts}",`;
  return `${HEADER}
const P = {};
async function probe(name, fn) {
  try { P[name] = { ok: true, value: String(await fn()) }; }
  catch (e) { P[name] = { ok: false, name: e.name, message: e.message }; }
}
service("web", {
  masters: ["alpha"],
  slaves: ["beta"],
  interval: "1s",${timeouts}
  async start(ctx) {
    ${body}
    ctx.log(JSON.stringify(P));
    return "UP";
  },
  stop: () => "FAIL",
});
`;
}
