/**
 * The lifetime of a lab helper process: it stops on SIGTERM, when its stdin ends (the lab closed
 * the pipe or died), or after a hard limit, so that no helper outlives a failed test.
 *
 * @module
 */

/**
 * Calls `stop` on SIGTERM, on stdin EOF, or after `maxLifeMs`.
 *
 * @param maxLifeMs The hard limit.
 * @param stop What to do then (may be called more than once).
 * @returns Cancels the limit (call it when the process ends on its own).
 */
export function stopOnEndOfLife(maxLifeMs: number, stop: () => void): () => void {
  Deno.addSignalListener("SIGTERM", stop);
  const life = setTimeout(stop, maxLifeMs);
  (async () => {
    try {
      for await (const _ of Deno.stdin.readable) { /* ignore input */ }
    } catch {
      // No stdin.
    }
    stop();
  })();
  return () => clearTimeout(life);
}
