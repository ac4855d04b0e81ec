/**
 * The sandboxed child's entry: the supervisor starts the child with
 * `deno run … --preload shell/script/child_main.ts SCRIPT --failsh-child`, so the child's
 * start-up ({@linkcode runChild}) runs before the script's first line, and `mod.ts` stays free
 * of it. Never import this module elsewhere.
 *
 * @module
 */
import { runChild } from "./child.ts";

runChild();
