/**
 * failsh's state dump (SIGUSR1, as the original dumped on a signal): the full snapshot plus the
 * policy and the sandbox counters, as one JSON document. A regular file is replaced atomically
 * (temporary file, fsync, rename); a FIFO gets the document written into it, and a FIFO nobody
 * reads is given up after a time limit.
 *
 * @module
 */
import type { Policy } from "./contract.ts";
import type { FailshSnapshot } from "../lib/types.ts";
import type { SandboxCounters } from "./sandbox/sandbox.ts";

/** What a dump holds. */
export interface DumpData {
  /** The snapshot (hosts, services, addresses, recent events). */
  snapshot: FailshSnapshot;
  /** The policy in force (key files named, secrets never read into the dump). */
  policy: Policy;
  /** The script's path. */
  script: string;
  /** failsh's process id. */
  pid: number;
  /** The sandbox's counters. */
  sandbox: SandboxCounters | null;
  /** Monitor port URL, if any. */
  monitor: string | null;
  /** Debug port URL, if any. */
  debug: string | null;
}

/** How long a dump waits for a FIFO reader, in ms. */
export const FIFO_TIMEOUT_MS = 10_000;

/**
 * Writes a dump to a file (atomically) or a FIFO.
 *
 * @param path Where.
 * @param data What.
 * @param options Time to wait for a FIFO reader.
 * @throws {Error} When the file cannot be written or no reader opened the FIFO in time.
 *
 * @example
 * ```ts ignore
 * import { writeDump } from "./dump.ts";
 * await writeDump("/tmp/failsh.dump", data);
 * ```
 */
export async function writeDump(
  path: string,
  data: DumpData,
  options: { fifoTimeoutMs?: number } = {},
): Promise<void> {
  const text = JSON.stringify({ dumpedAt: Date.now(), ...data }, null, 2) + "\n";
  const bytes = new TextEncoder().encode(text);
  let isFifo = false;
  try {
    isFifo = (await Deno.stat(path)).isFifo === true;
  } catch {
    // absent: a regular file is created
  }
  if (isFifo) {
    const timeoutMs = options.fifoTimeoutMs ?? FIFO_TIMEOUT_MS;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const opening = Deno.open(path, { write: true });
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(new Error(`Cannot write dump to FIFO ${path}: no reader within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    let file: Deno.FsFile;
    try {
      file = await Promise.race([opening, timeout]);
    } catch (error) {
      // If the open completes later, close the file at once.
      opening.then((f) => f.close(), () => {});
      throw error;
    } finally {
      clearTimeout(timer);
    }
    try {
      let off = 0;
      while (off < bytes.length) off += await file.write(bytes.subarray(off));
    } finally {
      file.close();
    }
    return;
  }
  const tmp = `${path}.tmp-${Deno.pid}-${Date.now()}`;
  try {
    const file = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
    try {
      let off = 0;
      while (off < bytes.length) off += await file.write(bytes.subarray(off));
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
  } catch (error) {
    await Deno.remove(tmp).catch(() => {});
    throw new Error(`Cannot write dump ${path}: ${(error as Error).message}`, { cause: error });
  }
  // fsync the directory so the rename itself is durable.
  try {
    const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) || "/" : ".";
    const d = await Deno.open(dir, { read: true });
    try {
      await d.sync();
    } catch {
      // some file systems refuse fsync on directories
    } finally {
      d.close();
    }
  } catch {
    // best effort
  }
}
