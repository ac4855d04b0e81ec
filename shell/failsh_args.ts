/**
 * failsh's command line: its `--help` and the parser of its flags, in a module of their own so
 * that a failover script run directly (`deno run script.ts -m 127.0.0.1:1848`) can pass every
 * failsh flag through without loading the supervisor first.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseFailshArgs } from "./failsh_args.ts";
 * const a = parseFailshArgs(["-m", "off", "-l", "/tmp/dump"], { script: "/etc/failover/cluster.ts" });
 * assert.equal(a.policyPath, "/etc/failover/policy.json");
 * assert.equal(a.monitor, null);
 * assert.equal(a.dumpFile, "/tmp/dump");
 * ```
 *
 * @module
 */
import { dirname, resolve } from "node:path";
import { EXIT, exitCodesHelp, parseCommandLine, UsageError } from "../lib/cli.ts";

/** The text of `failsh --help`. */
export const FAILSH_HELP = `Usage: failsh [options] SCRIPT
       failsh --check [--policy FILE] SCRIPT
       failsh simulate SCRIPT SCENARIO [--json]

The failover shell: runs a failover script in a sandbox, polls the peers' faild,
decides (docs/decisions.md) and takes services over or releases them.

Options:
  -f, --script FILE     the failover script (or give it as the argument)
  -p, --policy FILE     the operator's policy (default: policy.json beside the script)
  -m, --monitor ADDR    monitor port HOST:PORT, or "off" (default: the policy's, 127.0.0.1:1848)
  -D, --debug ADDR      debug port HOST:PORT, or "off" (default: the policy's)
  -l, --dump FILE       where SIGUSR1 writes the state dump (default: the policy's dumpFile)
  -i, --pidfile FILE    write the process id to FILE
  -F, --foreground      stay in the foreground (always the case; for systemd and compatibility)
  -v, --log-level [FAC=]LEVEL
                        log level: error, warn, info, debug, trace (default info); alone for
                        every facility or per facility; repeatable
      --check           validate script and policy without running them (the arbiter's
                        endpoints against the policy's etcd, its timing rule too); exit 0 ok,
                        1 warnings, 2 errors (like keepalived -t)
      --json            with --check or simulate: print JSON
  -h, --help            this help

With an etcd arbiter declared in the script (arbiter({...}), docs/arbiter.md), the
supervisor talks to etcd: a service is started only while this host holds its key.

Signals: SIGUSR1 writes a state dump; SIGHUP reloads script and policy (held addresses
stay; a broken new script keeps the old one; the arbiter cannot change); SIGTERM/SIGINT
stop, releasing or keeping addresses as the policy's onExit says.

${
  exitCodesHelp([
    [EXIT.ok, "clean exit; --check: no problem"],
    [EXIT.failure, "could not start or release; --check: warnings only"],
    [EXIT.checkErrors, "--check found errors"],
    [EXIT.usage, null],
  ])
}`;

/** What failsh runs with: the script, the policy and the overrides of the policy's settings. */
export interface FailshRunArgs {
  /** The failover script: `-f`, the argument, or the one a directly run script gives. */
  script: string;
  /** The policy file: `-p, --policy`, else `policy.json` beside the script. */
  policyPath: string;
  /** `-m, --monitor`: the monitor's listen address (`null` for `off`), absent for the policy's. */
  monitor?: string | null;
  /** `-D, --debug`: the debug port's listen address (`null` for `off`), absent for the policy's. */
  debug?: string | null;
  /** `-l, --dump`: where SIGUSR1 writes the state dump, absent for the policy's. */
  dumpFile?: string;
  /** `-i, --pidfile`: written at start and removed at exit. */
  pidFile?: string;
}

/** failsh's flags, parsed. */
export interface FailshArgs extends FailshRunArgs {
  /** `-h, --help`. */
  help: boolean;
  /** `--check`. */
  check: boolean;
  /** `--json`. */
  json: boolean;
  /** `-v, --log-level`, in order. */
  logLevel: string[];
}

/** Options of {@linkcode parseFailshArgs}. */
export interface ParseFailshArgsOptions {
  /** The script when it is known (run directly): no script argument is then taken. */
  script?: string;
}

/**
 * Parses failsh's flags (not `simulate`, which has its own).
 *
 * @param args The arguments.
 * @param options The script, when it is the program being run.
 * @returns The flags; `script` is empty only with `--help`.
 * @throws {UsageError} On an unknown option, a missing value, no script or two scripts.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseFailshArgs } from "./failsh_args.ts";
 * assert.throws(() => parseFailshArgs(["a.ts", "b.ts"]), /exactly one SCRIPT/);
 * ```
 */
export function parseFailshArgs(
  args: readonly string[],
  options: ParseFailshArgsOptions = {},
): FailshArgs {
  const { values: v, positionals } = parseCommandLine("failsh", args, {
    options: {
      script: { type: "string", short: "f" },
      policy: { type: "string", short: "p" },
      monitor: { type: "string", short: "m" },
      debug: { type: "string", short: "D" },
      dump: { type: "string", short: "l" },
      pidfile: { type: "string", short: "i" },
      foreground: { type: "boolean", short: "F" },
      "log-level": { type: "string", short: "v", multiple: true },
      check: { type: "boolean" },
    },
    shared: ["json"],
  });
  const out: FailshArgs = {
    help: v.help ?? false,
    check: v.check ?? false,
    json: v.json ?? false,
    script: "",
    policyPath: "",
    logLevel: v["log-level"] ?? [],
  };
  if (out.help) return out;
  const given = [options.script, v.script, ...positionals].filter((s) => s !== undefined);
  if (given.length !== 1) {
    throw new UsageError(
      options.script === undefined
        ? "Give exactly one SCRIPT (or -f SCRIPT)"
        : `Unexpected argument "${given[1]}": the script is ${options.script}`,
    );
  }
  out.script = given[0]!;
  out.policyPath = v.policy ?? resolve(dirname(resolve(out.script)), "policy.json");
  const off = (x: string) => x === "off" ? null : x;
  if (v.monitor !== undefined) out.monitor = off(v.monitor);
  if (v.debug !== undefined) out.debug = off(v.debug);
  if (v.dump !== undefined) out.dumpFile = v.dump;
  if (v.pidfile !== undefined) out.pidFile = v.pidfile;
  return out;
}
