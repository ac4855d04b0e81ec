/**
 * faild's state file: written atomically (temporary file, fsync, rename, fsync of the directory),
 * so a crash at any moment leaves either the old or the new state on disk, never a torn file; and
 * read back at start.
 *
 * @module
 */
import { basename, dirname, join } from "node:path";
import type { ServiceRecord } from "../../lib/types.ts";
import type { ReplayMarks } from "./nonce.ts";
import { validateRecord } from "./store.ts";

/** The `format` field that marks a faild state file. */
export const STATE_FORMAT = "failover-faild-state";

/** The version of the state file layout. */
export const STATE_VERSION = 1;

/** Largest state file faild reads, in bytes. */
export const MAX_STATE_FILE_BYTES = 64 * 1024 * 1024;

/** The content of a state file. */
export interface StateFile {
  /** Always {@linkcode STATE_FORMAT}. */
  format: typeof STATE_FORMAT;
  /** Always {@linkcode STATE_VERSION}. */
  version: number;
  /** When it was written, ms since the epoch. */
  savedAt: number;
  /** The faild's host name. */
  host: string;
  /** Every service, sorted by name. */
  services: ServiceRecord[];
  /** The writes accepted in the last seconds, refused if replayed after a restart. */
  replay?: ReplayMarks;
}

/**
 * Writes a file atomically: the data goes to a temporary file in the same directory, which is
 * flushed to disk, renamed over the target, and the directory is flushed too.
 *
 * @param path The target file.
 * @param data The new content.
 * @param options File mode of a new file (default `0o600`).
 * @returns When the data and the rename are on disk.
 *
 * @example
 * ```ts ignore
 * import { writeFileAtomic } from "./persist.ts";
 * await writeFileAtomic("/var/lib/failover/faild.state", "{}");
 * ```
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  options: { mode?: number } = {},
): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${Deno.pid}.tmp`);
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const file = await Deno.open(tmp, {
    write: true,
    create: true,
    truncate: true,
    mode: options.mode ?? 0o600,
  });
  try {
    let offset = 0;
    while (offset < bytes.length) offset += await file.write(bytes.subarray(offset));
    await file.sync();
  } catch (error) {
    file.close();
    await Deno.remove(tmp).catch(() => {});
    throw error;
  }
  file.close();
  try {
    await Deno.rename(tmp, path);
  } catch (error) {
    await Deno.remove(tmp).catch(() => {});
    throw error;
  }
  const d = await Deno.open(dir, { read: true });
  try {
    await d.sync();
  } finally {
    d.close();
  }
}

/**
 * Serializes the state.
 *
 * @param host The faild's host name.
 * @param services The records.
 * @param now The time of writing.
 * @param replay The writes accepted within the replay window (omitted when empty).
 * @returns The JSON text of the state file.
 *
 * @example
 * ```ts
 * import { parseStateFile, serializeState } from "./persist.ts";
 * import { deepEqual } from "node:assert/strict";
 * const text = serializeState("h1", [], 1);
 * deepEqual(parseStateFile(text).services.length, 0);
 * ```
 */
export function serializeState(
  host: string,
  services: readonly Readonly<ServiceRecord>[],
  now: number = Date.now(),
  replay?: ReplayMarks,
): string {
  const content: StateFile = {
    format: STATE_FORMAT,
    version: STATE_VERSION,
    savedAt: now,
    host,
    services: services as ServiceRecord[],
  };
  let text = JSON.stringify(content, null, 1);
  if (replay !== undefined && (replay.sessions.length > 0 || replay.nonces.length > 0)) {
    // One line for the marks: they change with every write and nobody reads them by eye.
    text = `${text.slice(0, -2)},\n "replay": ${JSON.stringify(replay)}\n}`;
  }
  return text + "\n";
}

const HEX16 = /^[0-9a-f]{16}$/;
const HEX32 = /^[0-9a-f]{32}$/;

function parseReplay(value: unknown, where: string): ReplayMarks {
  const v = value as Partial<ReplayMarks> | null;
  if (
    typeof v !== "object" || v === null || !Array.isArray(v.sessions) || !Array.isArray(v.nonces)
  ) {
    throw new SyntaxError(`Invalid ${where}: "replay" must hold "sessions" and "nonces" arrays`);
  }
  const time = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 0;
  v.sessions.forEach((e, i) => {
    if (
      !Array.isArray(e) || e.length !== 4 || !HEX16.test(String(e[0])) ||
      !HEX16.test(String(e[1])) || !Number.isSafeInteger(e[2]) || e[2] < 1 ||
      e[2] > 0xffffffff || !time(e[3])
    ) {
      throw new SyntaxError(
        `Invalid ${where}: replay.sessions[${i}] must be [key id, session id, counter, expiry]`,
      );
    }
  });
  v.nonces.forEach((e, i) => {
    if (
      !Array.isArray(e) || e.length !== 3 || !HEX16.test(String(e[0])) ||
      !HEX32.test(String(e[1])) || !time(e[2])
    ) {
      throw new SyntaxError(
        `Invalid ${where}: replay.nonces[${i}] must be [key id, nonce, expiry]`,
      );
    }
  });
  return { sessions: v.sessions, nonces: v.nonces };
}

/**
 * Parses and validates the text of a state file.
 *
 * @param text The file's content.
 * @param options `file` names the file in error messages.
 * @returns The state.
 * @throws {SyntaxError} Naming what is wrong.
 *
 * @example
 * ```ts
 * import { parseStateFile } from "./persist.ts";
 * try {
 *   parseStateFile("{");
 * } catch (e) {
 *   console.log((e as Error).message);
 * }
 * ```
 */
export function parseStateFile(text: string, options: { file?: string } = {}): StateFile {
  const where = options.file ? `state file ${options.file}` : "state file";
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new SyntaxError(`Invalid ${where}: ${(error as Error).message}`);
  }
  const v = value as Partial<StateFile> | null;
  if (typeof v !== "object" || v === null || v.format !== STATE_FORMAT) {
    throw new SyntaxError(`Invalid ${where}: "format" must be "${STATE_FORMAT}"`);
  }
  if (v.version !== STATE_VERSION) {
    throw new SyntaxError(`Invalid ${where}: version ${v.version} is not ${STATE_VERSION}`);
  }
  if (!Array.isArray(v.services)) {
    throw new SyntaxError(`Invalid ${where}: "services" must be an array`);
  }
  const seen = new Set<string>();
  const services = v.services.map((r, i) => {
    const rec = validateRecord(r, `${where}: services[${i}]`);
    if (seen.has(rec.name)) {
      throw new SyntaxError(`Invalid ${where}: service ${rec.name} appears twice`);
    }
    seen.add(rec.name);
    return rec;
  });
  return {
    format: STATE_FORMAT,
    version: STATE_VERSION,
    savedAt: typeof v.savedAt === "number" ? v.savedAt : 0,
    host: typeof v.host === "string" ? v.host : "",
    services,
    ...(v.replay !== undefined ? { replay: parseReplay(v.replay, where) } : {}),
  };
}

/**
 * Reads the state file, if there is one, and removes temporary files a crash left behind.
 *
 * @param path The state file.
 * @returns The state, or `null` when the file does not exist.
 * @throws {SyntaxError} When the file is malformed; `Error` when it cannot be read.
 *
 * @example
 * ```ts ignore
 * import { loadStateFile } from "./persist.ts";
 * const state = await loadStateFile("/var/lib/failover/faild.state");
 * ```
 */
export async function loadStateFile(path: string): Promise<StateFile | null> {
  const dir = dirname(path);
  const prefix = `.${basename(path)}.`;
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isFile && entry.name.startsWith(prefix) && entry.name.endsWith(".tmp")) {
        await Deno.remove(join(dir, entry.name)).catch(() => {});
      }
    }
  } catch {
    // The directory may not exist yet: the write will say so.
  }
  let text: string;
  try {
    const info = await Deno.stat(path);
    if (info.size > MAX_STATE_FILE_BYTES) {
      throw new RangeError(`larger than ${MAX_STATE_FILE_BYTES} bytes`);
    }
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw new Error(`Cannot read state file ${path}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  return parseStateFile(text, { file: path });
}

/** Options of {@linkcode StateWriter}. */
export interface StateWriterOptions {
  /**
   * The version of the state (grows with every change): the writer knows which version is on
   * disk, so {@linkcode StateWriter.settle} can tell whether memory is ahead of the disk.
   */
  version?: () => number;
  /** Called when a write fails; the writer then retries by itself (1 s, doubling to 30 s). */
  onError?: (error: Error) => void;
  /** Called when a write succeeds after failures. */
  onRecovered?: () => void;
}

/**
 * Writes the state file after changes, coalescing writes: while one write runs, further requests
 * are merged into the next one. Each {@linkcode StateWriter.save} resolves once a write that
 * includes the state at the time of the call is on disk. A failed write is retried in the
 * background until one succeeds.
 *
 * @example
 * ```ts ignore
 * import { StateWriter } from "./persist.ts";
 * const writer = new StateWriter("/tmp/faild.state", () => "{}");
 * await writer.save();
 * ```
 */
export class StateWriter {
  #path: string;
  #snapshot: () => string;
  #version: () => number;
  #onError: (error: Error) => void;
  #onRecovered: () => void;
  #requested = 0;
  #done = 0;
  #running: Promise<void> | null = null;
  /** The generation the running write covers, and the state version it snapshotted. */
  #runningTarget = 0;
  #runningVersion = -1;
  /** The state version on disk (-1: nothing written yet). */
  #savedVersion = -1;
  #waiters: { gen: number; resolve: () => void; reject: (e: unknown) => void }[] = [];
  #writes = 0;
  #errors = 0;
  #failing = false;
  #retryMs = 1000;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;

  /**
   * Creates a writer.
   *
   * @param path The state file.
   * @param snapshot Returns the current state as text, called at the start of each write.
   * @param options The state's version, and what to do when a write fails.
   */
  constructor(path: string, snapshot: () => string, options: StateWriterOptions = {}) {
    this.#path = path;
    this.#snapshot = snapshot;
    this.#version = options.version ?? (() => this.#requested);
    this.#onError = options.onError ?? (() => {});
    this.#onRecovered = options.onRecovered ?? (() => {});
  }

  /** The state file's path. */
  get path(): string {
    return this.#path;
  }

  /** Completed writes. */
  get writes(): number {
    return this.#writes;
  }

  /** Failed writes. */
  get errors(): number {
    return this.#errors;
  }

  /** Whether the state in memory is ahead of the file (a write pending, running or failed). */
  get behind(): boolean {
    return this.#running !== null || this.#version() !== this.#savedVersion;
  }

  /** Records that the file holds the current state (it was just read from it). */
  assumeSaved(): void {
    this.#savedVersion = this.#version();
  }

  /**
   * Asks for the current state to be written.
   *
   * @returns When a write that includes the current state is on disk; rejects if it failed.
   */
  save(): Promise<void> {
    const gen = ++this.#requested;
    const done = new Promise<void>((resolve, reject) => {
      this.#waiters.push({ gen, resolve, reject });
    });
    if (this.#running === null) this.#running = this.#run();
    return done;
  }

  /**
   * Makes sure the state in memory now is on disk: returns at once when it is, waits for the
   * running write when that one holds it, else writes.
   *
   * @returns When the current state is on disk; rejects if the write failed.
   */
  settle(): Promise<void> {
    const version = this.#version();
    if (this.#running === null && version === this.#savedVersion) return Promise.resolve();
    if (this.#running !== null && version === this.#runningVersion) {
      const gen = this.#runningTarget;
      return new Promise<void>((resolve, reject) => {
        this.#waiters.push({ gen, resolve, reject });
      });
    }
    return this.save();
  }

  /**
   * Waits for every requested write to finish.
   *
   * @returns When nothing is left to write.
   */
  async flush(): Promise<void> {
    while (this.#running !== null) await this.#running;
  }

  /** Stops the background retries (at shutdown). */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
  }

  async #run(): Promise<void> {
    try {
      while (this.#done < this.#requested) {
        const target = this.#requested;
        let failure: unknown = null;
        const version = this.#version();
        this.#runningTarget = target;
        this.#runningVersion = version;
        try {
          await writeFileAtomic(this.#path, this.#snapshot());
          this.#writes++;
          this.#savedVersion = version;
        } catch (error) {
          this.#errors++;
          failure = error;
        }
        this.#done = target;
        const ready = this.#waiters.filter((w) => w.gen <= target);
        this.#waiters = this.#waiters.filter((w) => w.gen > target);
        const error = failure === null ? null : new Error(
          `Cannot save state file ${this.#path}: ${(failure as Error).message}`,
          { cause: failure },
        );
        for (const w of ready) {
          if (error === null) w.resolve();
          else w.reject(error);
        }
        if (error !== null) this.#failed(error);
        else if (this.#failing) {
          this.#failing = false;
          this.#retryMs = 1000;
          clearTimeout(this.#retryTimer);
          this.#retryTimer = undefined;
          this.#onRecovered();
        }
      }
    } finally {
      this.#running = null;
      this.#runningVersion = -1;
    }
  }

  #failed(error: Error): void {
    this.#failing = true;
    this.#onError(error);
    if (this.#closed || this.#retryTimer !== undefined) return;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      if (this.#closed || !this.behind) return;
      this.#retryMs = Math.min(this.#retryMs * 2, 30_000);
      this.save().catch(() => {});
    }, this.#retryMs);
  }
}
