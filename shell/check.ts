/**
 * `failsh --check`: validates a failover script and its policy without running any handler, like
 * `keepalived -t`: parses the policy, loads the script's declaration in the sandbox (the
 * declaration loader of `shell/sandbox/load.ts`, shared with `failsh simulate`), and checks the
 * two against each other and against the machine. Exit code by severity: 0 clean, 1 warnings,
 * 2 errors.
 *
 * @module
 */
import { dirname, resolve } from "node:path";
import type { Policy, ScriptDecl } from "./contract.ts";
import { isLoopbackHost } from "./sandbox/cidr.ts";
import { loadDeclaration } from "./sandbox/load.ts";
import { MAX_PROBES } from "./liveness/prober.ts";
import { loadPolicy, parsePolicy, PolicyError } from "./sandbox/policy.ts";

/**
 * The problems of a script's arbiter under a policy: each endpoint must be one the policy's
 * `etcd` allows (the supervisor, not the script, talks to etcd, and only where the operator
 * says). failsh refuses to start with any of them; `--check` reports them as errors.
 *
 * @param decl The script's declaration.
 * @param policy The operator's policy.
 * @returns One sentence per problem; empty when allowed or without an arbiter.
 *
 * @example
 * ```ts
 * import { arbiterPolicyProblems } from "./check.ts";
 * import type { Policy, ScriptDecl } from "./contract.ts";
 * const decl = {
 *   arbiter: { endpoints: ["http://198.18.1.11:2379"] },
 * } as unknown as ScriptDecl;
 * console.log(arbiterPolicyProblems(decl, { etcd: [] } as unknown as Policy));
 * // ["endpoint http://198.18.1.11:2379 is not allowed by the policy's etcd (allowed: none)"]
 * ```
 */
export function arbiterPolicyProblems(decl: ScriptDecl, policy: Policy): string[] {
  if (!decl.arbiter) return [];
  const allowed = policy.etcd.join(", ") || "none";
  return decl.arbiter.endpoints.filter((e) => !policy.etcd.includes(e)).map((e) =>
    `endpoint ${e} is not allowed by the policy's etcd (allowed: ${allowed})`
  );
}

/** One problem found by {@linkcode checkFailsh}. */
export interface CheckProblem {
  /** `error` stops failsh from running as intended; `warning` is worth a look. */
  severity: "error" | "warning";
  /** Where: a file, and a field or declaration inside it. */
  where: string;
  /** What is wrong. */
  message: string;
}

/** What {@linkcode checkFailsh} found. */
export interface CheckReport {
  /** Every problem. */
  problems: CheckProblem[];
  /** The declaration, when the script loaded. */
  decl: ScriptDecl | null;
  /** The policy, when it parsed. */
  policy: Policy | null;
  /** 0 when clean, 1 with warnings only, 2 with errors (like `keepalived -t`). */
  code: 0 | 1 | 2;
}

/**
 * The liveness probes of a script against this machine: ping must run here at the declared
 * interval (iputils refuses short intervals to users without the right), and a probe is only
 * worth its packets when it detects faster than the polls.
 */
async function checkLiveness(
  decl: ScriptDecl,
  self: string,
  scriptAbs: string,
  report: { err: (where: string, m: string) => void; warn: (where: string, m: string) => void },
): Promise<void> {
  const probed = decl.hosts.filter((h) => h.liveness !== undefined);
  for (const h of probed) {
    const where = `${scriptAbs}: host ${h.name}`;
    const l = h.liveness!;
    if (h.name === self) {
      report.warn(where, "liveness is ignored for the host failsh runs on (it probes peers)");
      continue;
    }
    const services = decl.services.filter((s) =>
      s.masters.includes(h.name) || s.slaves.includes(h.name)
    );
    const pollMs = Math.min(...services.map((s) => s.intervalMs * s.fall));
    if (services.length > 0 && l.intervalMs * l.fall >= pollMs) {
      report.warn(
        where,
        `liveness detects a silent kernel after ${
          l.intervalMs * l.fall
        } ms, no sooner than the polls (${pollMs} ms): it adds nothing`,
      );
    }
  }
  const peers = new Set(
    decl.services.flatMap((s) =>
      [...s.masters, ...s.slaves].includes(self) ? [...s.masters, ...s.slaves] : []
    ),
  );
  const mine = probed.filter((h) => h.name !== self && peers.has(h.name));
  if (mine.length > MAX_PROBES) {
    report.err(
      scriptAbs,
      `liveness is declared for ${mine.length} peers of ${self}: at most ${MAX_PROBES} are probed (${
        mine.slice(MAX_PROBES).map((h) => h.name).join(", ")
      } would be judged by polls alone)`,
    );
  }
  const fastest = Math.min(
    ...probed.filter((h) => h.name !== self).map((h) => h.liveness!.intervalMs),
  );
  if (!Number.isFinite(fastest)) return;
  try {
    const out = await new Deno.Command("ping", {
      args: ["-n", "-c", "2", "-W", "1", "-i", String(fastest / 1000), "127.0.0.1"],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      signal: AbortSignal.timeout(5000),
    }).output();
    const said = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1) ?? "";
    if (/minimal interval|cannot flood/i.test(said)) {
      report.err(
        scriptAbs,
        `liveness.interval ${fastest} ms: iputils ping refuses it for this user (${said}); run failsh as root or declare at least 200 ms`,
      );
    } else if (!out.success && /not permitted|permission denied/i.test(said)) {
      report.err(scriptAbs, `liveness: ping cannot open an ICMP socket for this user (${said})`);
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      report.err(
        scriptAbs,
        "liveness is declared but ping is not installed (Debian package iputils-ping)",
      );
    }
  }
}

/**
 * Validates a script and its policy without running any handler: parses the policy, loads the
 * script in the sandbox to get its declaration, and checks the two against each other.
 *
 * @param script The failover script.
 * @param policyPath The policy file.
 * @returns Every problem found and the exit code by severity.
 *
 * @example
 * ```ts ignore
 * import { checkFailsh } from "./check.ts";
 * const report = await checkFailsh("failover.ts", "policy.json");
 * for (const p of report.problems) console.log(`${p.severity}: ${p.where}: ${p.message}`);
 * ```
 */
export async function checkFailsh(script: string, policyPath: string): Promise<CheckReport> {
  const problems: CheckProblem[] = [];
  const err = (where: string, message: string) =>
    problems.push({ severity: "error", where, message });
  const warn = (where: string, message: string) =>
    problems.push({ severity: "warning", where, message });
  const scriptAbs = resolve(script);
  const policyAbs = resolve(policyPath);

  let policy: Policy | null = null;
  try {
    policy = await loadPolicy(policyAbs);
  } catch (error) {
    if (error instanceof PolicyError) {
      for (const p of error.problems) err(policyAbs, p);
    } else err(policyAbs, (error as Error).message);
  }

  let decl: ScriptDecl | null = null;
  const output: string[] = [];
  try {
    await Deno.stat(scriptAbs);
    // Load the declaration with the real policy when it parsed, else with an empty one. The
    // registry refuses, and reports here, what a declaration cannot be: no service, a host a
    // service names but nobody declared, a service without master or without start or stop.
    decl = await loadDeclaration(
      scriptAbs,
      policy ?? parsePolicy(JSON.stringify({ host: "check" }), policyAbs),
      {
        onOutput: (line) => {
          output.push(line);
          if (output.length > 20) output.shift();
        },
      },
    );
  } catch (error) {
    const message = (error as Error).message.replace(/\s+$/, "");
    // "Invalid failover script:\n  - a\n  - b" gives one problem per item.
    const items = message.split(/\n\s+- /);
    if (items.length > 1) { for (const item of items.slice(1)) err(scriptAbs, item.trim()); }
    else {
      const tail = output.filter((l) => l.trim() !== "").slice(-5).join(" | ");
      err(scriptAbs, tail ? `${message}: ${tail}` : message);
    }
  }

  if (decl) {
    for (const s of decl.services) {
      if (s.masters.length + s.slaves.length < 2) {
        warn(
          `${scriptAbs}: service ${s.name}`,
          "names a single host: there is nothing to fail over to",
        );
      }
      if (s.intervalMs < 20) {
        warn(`${scriptAbs}: service ${s.name}`, `interval ${s.intervalMs} ms is below 20 ms`);
      }
    }
  }
  // The module graph is checked once, when the sandbox starts: code others may write could be
  // changed between that check and a child loading it.
  const scriptDir = dirname(scriptAbs);
  const writable: [string, string][] = [
    ["the script", scriptAbs],
    [`its directory ${scriptDir}`, scriptDir],
  ];
  for (const [what, path] of writable) {
    try {
      if (((Deno.statSync(path).mode ?? 0) & 0o022) !== 0) {
        warn(
          scriptAbs,
          `${what} is writable by others than its owner: someone could change the code between failsh's check of the module graph and a child loading it`,
        );
      }
    } catch {
      // missing: reported above
    }
  }
  if (decl && policy) {
    const self = decl.hosts.find((h) => h.name === policy!.host);
    if (!self) {
      err(
        `${policyAbs}: host`,
        `"${policy.host}" is not one of the script's hosts (${
          decl.hosts.map((h) => h.name).join(", ")
        })`,
      );
    } else if (
      !decl.services.some((s) =>
        s.masters.includes(policy!.host) || s.slaves.includes(policy!.host)
      )
    ) {
      warn(`${policyAbs}: host`, `${policy.host} takes part in no service of the script`);
    }
    await checkLiveness(decl, policy.host, scriptAbs, { err, warn });
    for (const problem of arbiterPolicyProblems(decl, policy)) {
      err(`${scriptAbs}: arbiter`, problem);
    }
    if (decl.arbiter && decl.arbiter.endpoints.length < 3) {
      warn(
        `${scriptAbs}: arbiter`,
        `${decl.arbiter.endpoints.length} etcd endpoint(s): with fewer than three members etcd loses its quorum with one, and every holder lets go`,
      );
    }
    if (decl.arbiter && policy.onExit === "keep") {
      warn(
        `${policyAbs}: onExit`,
        "keep with an arbiter: the address stays after failsh exits while its key expires, and the next holder then overlaps with it",
      );
    }
    if (!decl.arbiter && policy.etcd.length > 0) {
      warn(
        `${policyAbs}: etcd`,
        "the policy allows etcd endpoints but the script declares no arbiter",
      );
    }
    for (const h of decl.hosts) {
      if (h.key !== null && !(h.key in policy.keys)) {
        err(`${scriptAbs}: host ${h.name}`, `key "${h.key}" is not in the policy's keys`);
      }
      if (h.key === null && h.name !== policy.host) {
        warn(
          `${scriptAbs}: host ${h.name}`,
          "polls are not signed (key null): answers are not authenticated",
        );
      }
    }
  }
  if (policy) {
    for (const [name, k] of Object.entries(policy.keys)) {
      try {
        const info = await Deno.stat(k.file);
        if (info.size === 0) err(`${policyAbs}: keys.${name}`, `${k.file} is empty`);
      } catch {
        warn(
          `${policyAbs}: keys.${name}`,
          `cannot read ${k.file}: failsh will not start until it exists`,
        );
      }
    }
    if (policy.debug !== null && policy.debugKey === null) {
      err(
        `${policyAbs}: debugKey`,
        "the debug port is enabled but debugKey is null: every request would be refused",
      );
    }
    for (const [i, p] of policy.programs.entries()) {
      try {
        const info = await Deno.stat(p.path);
        if (!info.isFile || ((info.mode ?? 0o111) & 0o111) === 0) {
          warn(`${policyAbs}: programs[${i}]`, `${p.path} is not an executable file`);
        }
      } catch {
        warn(`${policyAbs}: programs[${i}]`, `${p.path} does not exist on this machine`);
      }
    }
    for (const [field, path] of [["audit", policy.audit], ["dumpFile", policy.dumpFile]] as const) {
      try {
        await Deno.stat(dirname(path));
      } catch {
        warn(`${policyAbs}: ${field}`, `directory ${dirname(path)} does not exist on this machine`);
      }
    }
    if (
      policy.monitor !== null &&
      !isLoopbackHost(policy.monitor.slice(0, policy.monitor.lastIndexOf(":")))
    ) {
      warn(
        `${policyAbs}: monitor`,
        `${policy.monitor} is not loopback: the monitor port is unsigned`,
      );
    }
  }
  const code = problems.some((p) => p.severity === "error") ? 2 : problems.length > 0 ? 1 : 0;
  return { problems, decl, policy, code };
}
