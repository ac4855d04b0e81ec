/**
 * The declaration loader of `failsh --check` and `failsh simulate`: loads a script in a
 * declaration-only sandbox (the real child, command line and module-graph check; the simulated
 * network driver; an audit log that goes nowhere; no handler child started) and returns what it
 * declared.
 *
 * @module
 */
import type { Policy, ScriptDecl } from "../contract.ts";
import { AuditLog } from "./audit.ts";
import { createNetDriver } from "./netops.ts";
import { createSandbox } from "./sandbox.ts";

/** Options of {@linkcode loadDeclaration}. */
export interface LoadDeclarationOptions {
  /** Told each line the script prints while loading (default: dropped). */
  onOutput?: (line: string) => void;
}

/**
 * Loads a script's declaration through the sandbox; no handler runs, nothing is taken over.
 *
 * @param script The script (an absolute path).
 * @param policy The policy to load it with (its `read`, `net` and `childUser` apply).
 * @param options Where the script's output goes.
 * @returns The declaration, checked like failsh checks it.
 * @throws {ScriptError} When the script fails to load or declares something invalid (the
 *   message lists each problem on a line `  - …`), or its module graph is refused.
 *
 * @example
 * ```ts ignore
 * import { loadDeclaration } from "./load.ts";
 * import { loadPolicy } from "./policy.ts";
 * const decl = await loadDeclaration("/etc/failover/failover.ts", await loadPolicy("policy.json"));
 * console.log(decl.services.map((s) => s.name));
 * ```
 */
export async function loadDeclaration(
  script: string,
  policy: Policy,
  options: LoadDeclarationOptions = {},
): Promise<ScriptDecl> {
  const sandbox = createSandbox(script, policy, {
    net: createNetDriver("simulated"),
    audit: new AuditLog({ script, sink: () => {} }),
    prespawn: false,
    onOutput: options.onOutput ?? (() => {}),
    onLog: () => {},
  });
  try {
    return await sandbox.start();
  } finally {
    await sandbox.close();
  }
}
