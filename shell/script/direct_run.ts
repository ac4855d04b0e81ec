/**
 * The start-up of a failover script run directly:
 * `deno run -A failover.ts [failsh options]` is `failsh [failsh options] failover.ts`. The first
 * declaration (`host()`, `service()`, `trap()` of `mod.ts`) arms it; once the main module has
 * loaded, if the main module itself declared something, is not a test or a doc test, and is not
 * the sandboxed child, failsh's supervisor starts around the script with the script's command
 * line as failsh's (`--policy`, `-m`, `-D`, `-l`, `-i`, `-v`, `--check`…), and runs the same
 * script again in the sandboxed child.
 *
 * Importing `mod.ts` arms nothing: a tool or a test that imports a script, or only the API's
 * types, gets no listener. failsh itself (`shell/failsh.ts`) is imported with a computed
 * specifier, so it is not in the script's module graph and never loads in the child.
 *
 * @module
 */
import { CHILD_FLAG } from "../rpc.ts";

const MOD_URL = new URL("../../mod.ts", import.meta.url).href;
const HERE = new URL("./", import.meta.url).href;

let armed = false;
/** Whether the main module itself (directly or through its functions) declared something. */
let declaredByMain = false;

/** The modules on the stack of a declaration call (outside the API's own files), innermost first. */
function callerModules(): string[] {
  const stack = new Error().stack ?? "";
  const urls: string[] = [];
  for (const m of stack.matchAll(/((?:file|https?):\/\/[^\s)]+?):\d+:\d+/g)) {
    const url = m[1] as string;
    if (url !== MOD_URL && !url.startsWith(HERE)) urls.push(url);
  }
  return urls;
}

/**
 * Tells whether a main module is a test or a doc test (`deno test --doc` names its snippets
 * `file.ts$12-30.ts`): never start failsh from one.
 *
 * @param url The main module's URL.
 * @returns `true` for a test module.
 *
 * @example
 * ```ts
 * import { isTestModule } from "./direct_run.ts";
 * import { equal } from "node:assert/strict";
 * equal(isTestModule("file:///x/failover_test.ts"), true);
 * equal(isTestModule("file:///x/mod.ts$21-45.ts"), true);
 * equal(isTestModule("file:///x/failover.ts"), false);
 * ```
 */
export function isTestModule(url: string): boolean {
  return /(_test|\.test)\.[jt]sx?$/.test(url) || /\$\d+-\d+\.[jt]sx?$/.test(url) ||
    /#\d+-\d+\.[jt]sx?$/.test(url) || url.includes("$deno$");
}

async function startIfRunDirectly(): Promise<void> {
  if (Deno.args.includes(CHILD_FLAG)) return;
  let main: string;
  try {
    main = Deno.mainModule;
  } catch {
    return;
  }
  if (!declaredByMain || isTestModule(main) || !main.startsWith("file:")) return;
  const failsh = new URL("../failsh.ts", import.meta.url).href;
  const { main: failshMain } = await import(failsh) as {
    main(args: string[], options: { script: string }): Promise<number>;
  };
  const script = decodeURIComponent(new URL(main).pathname);
  Deno.exit(await failshMain([...Deno.args], { script }));
}

/**
 * Called by each declaration of `mod.ts`: arms the start-up (once) and notes whether the main
 * module itself declared.
 *
 * @example
 * ```ts ignore
 * import { noteDeclaration } from "./direct_run.ts";
 * noteDeclaration(); // as mod.ts's host(), service() and trap() do
 * ```
 */
export function noteDeclaration(): void {
  if (!armed) {
    armed = true;
    // The main module has finished evaluating (top-level awaits included) when `load` fires.
    globalThis.addEventListener("load", () => {
      setTimeout(() => void startIfRunDirectly(), 0);
    });
  }
  if (!declaredByMain) {
    try {
      declaredByMain = callerModules().includes(Deno.mainModule);
    } catch {
      // no main module: never start failsh from here
    }
  }
}
