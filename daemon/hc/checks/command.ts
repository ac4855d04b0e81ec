/**
 * The `command` check: runs an allow-listed program with a fixed argv (no shell); passes when it
 * exits with the expected code before the timeout. It is killed when the time is up.
 *
 * @module
 */
import type { CheckKindDef, CheckResult } from "./_types.ts";
import { errorText, parseInteger } from "./_util.ts";
import { runBounded } from "./_process.ts";

/**
 * Runs the command once.
 *
 * @param options Argv, expected exit code and time limit.
 * @param signal Kills the program when it aborts.
 * @returns The check result.
 */
export async function probeCommand(
  options: { argv: string[]; exit: number; timeoutMs: number },
  signal: AbortSignal,
): Promise<CheckResult> {
  try {
    const out = await runBounded(options.argv, { timeoutMs: options.timeoutMs, signal });
    const said = (out.stdout.trim() || out.stderr.trim()).split("\n")[0]?.slice(0, 160) ?? "";
    const tail = said ? `: ${said}` : "";
    if (out.timedOut) {
      return { ok: false, detail: `killed after ${options.timeoutMs} ms${tail}`, latencyMs: null };
    }
    if (out.code !== options.exit) {
      const how = out.code === null ? `killed by ${out.signal}` : `exit ${out.code}`;
      return {
        ok: false,
        detail: `${how}, expected exit ${options.exit}${tail}`,
        latencyMs: out.durationMs,
      };
    }
    return { ok: true, detail: `exit ${out.code}${tail}`, latencyMs: out.durationMs };
  } catch (e) {
    return { ok: false, detail: `cannot run ${options.argv[0]}: ${errorText(e)}`, latencyMs: null };
  }
}

/** The `command` check kind: `command /usr/bin/prog arg... [exit=0]`. */
export const commandCheck: CheckKindDef = {
  summary: "an allow-listed program (absolute path, no shell) exits with the expected code",
  options: {
    exit: {
      help: "expected exit code, 0 to 255 (default 0)",
      parse: (t) => parseInteger(t, { min: 0, max: 255 }),
    },
  },
  takesArgv: true,
  validate(_v, argv, context) {
    const errors: string[] = [];
    const program = argv[0];
    if (program === undefined) {
      errors.push("the program is missing: write command /absolute/path [arguments]");
    } else if (!program.startsWith("/")) {
      errors.push(`program "${program}" is not an absolute path`);
    } else if (!context.allowPrograms.includes(program)) {
      errors.push(
        `program ${program} is not allowed: add "allow-program ${program}" to the Hcfile header`,
      );
    }
    return { errors, warnings: [] };
  },
  target: (_v, argv) => argv.join(" "),
  create(v, argv, context) {
    const options = {
      argv,
      exit: (v.exit as number | undefined) ?? 0,
      timeoutMs: context.timeoutMs,
    };
    return { run: (signal) => probeCommand(options, signal) };
  },
};
