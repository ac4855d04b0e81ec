/**
 * Helpers for hc's tests: a quiet logger and a bounded wait.
 *
 * @module
 */
import { Logger } from "../../lib/log.ts";

/** A logger that keeps its lines in memory. */
export function memoryLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = new Logger({ sink: (l) => lines.push(l), level: "debug" });
  return { logger, lines };
}

/**
 * Polls a condition every 20 ms until it holds or the time is up.
 *
 * @param what What is awaited, for the error.
 * @param condition The condition.
 * @param timeoutMs The most time to wait.
 * @throws {Error} When the time is up.
 */
export async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
