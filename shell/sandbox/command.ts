/**
 * The command line a sandboxed child is started with: `deno run --no-prompt` with only the
 * policy's read and net permissions and the child's entry preloaded ({@linkcode childCommand}),
 * under util-linux `setpriv` ({@linkcode confinementPrefix}), with a cleared environment
 * ({@linkcode childEnv}). See `docs/sandbox.md`, "The child's command line".
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import type { Policy } from "../contract.ts";
import { CHILD_FLAG } from "../rpc.ts";
import type { UserIds } from "./read_paths.ts";

/** The child's entry, preloaded before the script: the child's start-up and RPC server. */
const CHILD_MAIN = fileURLToPath(new URL("../script/child_main.ts", import.meta.url));

/**
 * The files the child loads besides the script's module graph (which holds the rest of what the
 * entry imports, through `mod.ts`): a `childUser` must be able to read them too.
 */
export const CHILD_ENTRY_FILES: readonly string[] = [
  CHILD_MAIN,
  fileURLToPath(new URL("../script/child.ts", import.meta.url)),
];

/**
 * The command line of a sandboxed child: `deno run --no-prompt` with only the policy's read and
 * net permissions, every other permission denied, no config file, lock file, remote or npm
 * import (so the child never downloads anything), and a V8 heap limit.
 *
 * @param scriptPath The script (absolute path).
 * @param policy The policy (`read`, `net`).
 * @param options The deno executable and heap limit.
 * @returns The argv, starting with the deno executable.
 *
 * @example
 * ```ts
 * import { childCommand } from "./command.ts";
 * import { parsePolicy } from "./policy.ts";
 * import { deepEqual } from "node:assert/strict";
 * const policy = parsePolicy('{"host":"a","net":["127.0.0.1:80"]}', "/etc/failover/policy.json");
 * const argv = childCommand("/etc/failover/failover.ts", policy, { denoPath: "deno" });
 * deepEqual(argv.includes("--allow-net=127.0.0.1:80"), true);
 * deepEqual(argv.some((a) => a.startsWith("--allow-run")), false);
 * ```
 */
export function childCommand(
  scriptPath: string,
  policy: Policy,
  options: { denoPath?: string; memoryMb?: number } = {},
): string[] {
  const argv = [
    options.denoPath ?? Deno.execPath(),
    "run",
    "--no-prompt",
    "--no-config",
    "--no-lock",
    "--no-remote",
    "--no-npm",
    "--cached-only",
    `--v8-flags=--max-old-space-size=${options.memoryMb ?? 256}`,
  ];
  // An empty --allow-read= would allow everything: only pass the flags with a list.
  if (policy.read.length > 0) argv.push(`--allow-read=${policy.read.join(",")}`);
  else argv.push("--deny-read");
  if (policy.net.length > 0) argv.push(`--allow-net=${policy.net.join(",")}`);
  else argv.push("--deny-net");
  argv.push(
    "--deny-write",
    "--deny-env",
    "--deny-run",
    "--deny-ffi",
    "--deny-sys",
    "--deny-import",
    `--preload=${CHILD_MAIN}`,
    scriptPath,
    CHILD_FLAG,
  );
  return argv;
}

/**
 * The wrapper a child is started under (util-linux `setpriv`, when installed): the child is
 * killed if the supervisor dies (`--pdeathsig`, so a script stuck in a loop is never orphaned),
 * can never gain privileges (`--no-new-privs`), and, when the supervisor is root, runs with no
 * Linux capability at all (empty bounding set): even a script escaping deno's permissions could
 * not change the network. With `user` (the policy's `childUser`), the child runs as that user
 * and group with no supplementary group, so files only root may read stay closed to it.
 *
 * @param options `user`: the ids the child runs as (default: failsh's own).
 * @returns The argv prefix, or an empty list without `setpriv` (and no `user`).
 *
 * @example
 * ```ts
 * import { confinementPrefix } from "./command.ts";
 * console.log(confinementPrefix().join(" "));
 * ```
 */
export function confinementPrefix(options: { user?: UserIds | null } = {}): string[] {
  let setpriv: string | null = null;
  for (const candidate of ["/usr/bin/setpriv", "/bin/setpriv"]) {
    try {
      if (Deno.statSync(candidate).isFile) {
        setpriv = candidate;
        break;
      }
    } catch {
      // try the next one
    }
  }
  const user = options.user ?? null;
  if (setpriv === null) {
    if (user === null) return [];
    throw new Error(
      `Cannot run the script as childUser ${user.uid}:${user.gid}: setpriv (util-linux) is not installed`,
    );
  }
  const argv = [setpriv, "--pdeathsig", "KILL", "--no-new-privs", "--inh-caps", "-all"];
  if (user !== null) argv.push(`--reuid=${user.uid}`, `--regid=${user.gid}`, "--clear-groups");
  let root = false;
  try {
    root = Deno.uid() === 0;
  } catch {
    // no sys permission: keep the bounding set
  }
  if (root) argv.push("--bounding-set", "-all");
  return [...argv, "--"];
}

/**
 * The child's environment: only what deno needs to find its cache (`DENO_DIR`, `HOME`,
 * `XDG_CACHE_HOME`), `TZ`, and `NO_COLOR`, so even a script allowed to read `/proc` sees no
 * secret in `/proc/self/environ`.
 *
 * @returns The variables.
 *
 * @example
 * ```ts
 * import { childEnv } from "./command.ts";
 * import { equal } from "node:assert/strict";
 * equal(childEnv().NO_COLOR, "1");
 * ```
 */
export function childEnv(): Record<string, string> {
  const env: Record<string, string> = { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" };
  for (const name of ["DENO_DIR", "HOME", "XDG_CACHE_HOME", "TZ"]) {
    try {
      const v = Deno.env.get(name);
      if (v !== undefined) env[name] = v;
    } catch {
      // no env permission: deno uses its defaults
    }
  }
  return env;
}
