/**
 * Helpers of the sandbox integration tests: write a failover script and a policy into a
 * temporary directory, and collect what the sandboxed script logs.
 *
 * @module
 */
import { parsePolicy } from "../shell/policy.ts";
import type { Policy } from "../shell/contract.ts";
import { createSandbox, type FailshSandbox, type SandboxOptions } from "../shell/sandbox.ts";
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
