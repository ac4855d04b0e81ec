/**
 * faild's state store: the services, their states and change counters, bounded in number, with a
 * sequence of change events for monitors.
 *
 * @module
 */
import {
  type ChangeEvent,
  EPOCH_PATTERN,
  isServiceState,
  isValidName,
  MAX_DETAIL_LENGTH,
  type ServiceRecord,
  type ServiceState,
} from "../../lib/types.ts";

/** Default most services a faild holds. */
export const DEFAULT_MAX_SERVICES = 1000;

/**
 * A new service was refused because the store is full.
 *
 * @example
 * ```ts
 * import { TooManyServicesError } from "./store.ts";
 * console.log(new TooManyServicesError(1000).message);
 * ```
 */
export class TooManyServicesError extends Error {
  /**
   * Creates the error.
   *
   * @param max The configured limit.
   */
  constructor(max: number) {
    super(`Too many services: faild already holds ${max}, the most --max-services allows`);
    this.name = "TooManyServicesError";
  }
}

/** What {@linkcode ServiceStore.set} did. */
export interface SetResult {
  /** The record after the call. */
  record: ServiceRecord;
  /** The record did not exist before. */
  created: boolean;
  /** The state changed (or the record was created). */
  stateChanged: boolean;
  /** Anything stored changed (state, detail or setter): an event was emitted. */
  modified: boolean;
}

/** A listener of store changes. */
export type ChangeListener = (event: ChangeEvent) => void;

/** Options of {@linkcode ServiceStore}. */
export interface StoreOptions {
  /** Most services held (default {@linkcode DEFAULT_MAX_SERVICES}). */
  maxServices?: number;
  /** The clock, ms since the epoch (default `Date.now`). */
  now?: () => number;
}

/**
 * Validates a service record read from outside (state file).
 *
 * @param value Anything.
 * @param where Names the value in the error.
 * @returns The record, copied.
 * @throws {SyntaxError} Naming the first bad field.
 *
 * @example
 * ```ts
 * import { validateRecord } from "./store.ts";
 * const r = validateRecord(
 *   { name: "web", state: "UP", lastChange: 1, changes: 0, detail: "", setBy: "local" },
 *   "record 0",
 * );
 * console.log(r.name);
 * ```
 */
export function validateRecord(value: unknown, where: string): ServiceRecord {
  const r = value as Record<string, unknown> | null;
  if (typeof r !== "object" || r === null || Array.isArray(r)) {
    throw new SyntaxError(`Invalid ${where}: not an object`);
  }
  if (typeof r.name !== "string" || !isValidName(r.name)) {
    throw new SyntaxError(`Invalid ${where}: name ${JSON.stringify(r.name)} is not a valid name`);
  }
  if (!isServiceState(r.state)) {
    throw new SyntaxError(
      `Invalid ${where}: state ${JSON.stringify(r.state)} is not UP, RECOVER or FAIL`,
    );
  }
  if (!Number.isSafeInteger(r.lastChange) || (r.lastChange as number) < 0) {
    throw new SyntaxError(`Invalid ${where}: lastChange must be a non-negative integer`);
  }
  if (!Number.isSafeInteger(r.changes) || (r.changes as number) < 0) {
    throw new SyntaxError(`Invalid ${where}: changes must be a non-negative integer`);
  }
  if (typeof r.detail !== "string" || r.detail.length > MAX_DETAIL_LENGTH) {
    throw new SyntaxError(
      `Invalid ${where}: detail must be text of at most ${MAX_DETAIL_LENGTH} characters`,
    );
  }
  if (typeof r.setBy !== "string" || r.setBy.length > 64) {
    throw new SyntaxError(`Invalid ${where}: setBy must be text of at most 64 characters`);
  }
  if (r.epoch !== undefined && (typeof r.epoch !== "string" || !EPOCH_PATTERN.test(r.epoch))) {
    throw new SyntaxError(`Invalid ${where}: epoch must be a decimal string of 1-19 digits`);
  }
  return {
    name: r.name,
    state: r.state,
    lastChange: r.lastChange as number,
    changes: r.changes as number,
    detail: r.detail,
    setBy: r.setBy,
    ...(typeof r.epoch === "string" ? { epoch: r.epoch } : {}),
  };
}

/**
 * The services of one faild.
 *
 * @example
 * ```ts
 * import { ServiceStore } from "./store.ts";
 * import { deepEqual } from "node:assert/strict";
 * const store = new ServiceStore({ maxServices: 10 });
 * store.set("web", "UP", { setBy: "local" });
 * store.set("web", "FAIL", { setBy: "local", detail: "port 80 closed" });
 * deepEqual(store.get("web")?.changes, 1);
 * ```
 */
export class ServiceStore {
  #services = new Map<string, ServiceRecord>();
  #sorted: ServiceRecord[] | null = null;
  #listeners = new Set<ChangeListener>();
  #max: number;
  #now: () => number;
  #seq = 0;
  #version = 0;

  /**
   * Creates an empty store.
   *
   * @param options Limit and clock.
   */
  constructor(options: StoreOptions = {}) {
    this.#max = options.maxServices ?? DEFAULT_MAX_SERVICES;
    if (!Number.isSafeInteger(this.#max) || this.#max < 1) {
      throw new RangeError(`Invalid maximum of services ${this.#max}: expected a positive integer`);
    }
    this.#now = options.now ?? Date.now;
  }

  /** Number of services held. */
  get size(): number {
    return this.#services.size;
  }

  /** The most services the store holds. */
  get maxServices(): number {
    return this.#max;
  }

  /** Increases with every modification; lets callers cache derived data. */
  get version(): number {
    return this.#version;
  }

  /** Sequence number of the last event (0 before the first). */
  get seq(): number {
    return this.#seq;
  }

  /**
   * Reads one service.
   *
   * @param name The service name.
   * @returns A copy of the record, or `undefined`.
   */
  get(name: string): ServiceRecord | undefined {
    const r = this.#services.get(name);
    return r ? { ...r } : undefined;
  }

  /**
   * Every service sorted by name. The array and its records are shared and must not be modified.
   *
   * @returns The records.
   */
  list(): readonly Readonly<ServiceRecord>[] {
    if (this.#sorted === null) {
      this.#sorted = [...this.#services.values()].sort((a, b) =>
        a.name < b.name ? -1 : a.name > b.name ? 1 : 0
      );
    }
    return this.#sorted;
  }

  /**
   * Creates or updates a service. The change counter and `lastChange` move only when the state
   * differs; `detail` (empty when not given) and `setBy` are replaced every time.
   *
   * @param name The service name.
   * @param state The new state.
   * @param options Who sets it and the detail text.
   * @returns What changed.
   * @throws {RangeError} On a bad name, state or detail.
   * @throws {TooManyServicesError} When creating beyond the limit.
   */
  set(
    name: string,
    state: ServiceState,
    options: { setBy: string; detail?: string; epoch?: string },
  ): SetResult {
    if (!isValidName(name)) throw new RangeError(`Invalid service name "${name}"`);
    if (!isServiceState(state)) throw new RangeError(`Invalid state "${state}"`);
    const detail = options.detail ?? "";
    if (detail.length > MAX_DETAIL_LENGTH) {
      throw new RangeError(`Invalid detail: longer than ${MAX_DETAIL_LENGTH} characters`);
    }
    const epoch = options.epoch;
    if (epoch !== undefined && !EPOCH_PATTERN.test(epoch)) {
      throw new RangeError(`Invalid epoch "${epoch}": expected a decimal string of 1-19 digits`);
    }
    const withEpoch = epoch === undefined ? {} : { epoch };
    const old = this.#services.get(name);
    if (old === undefined) {
      if (this.#services.size >= this.#max) throw new TooManyServicesError(this.#max);
      const record: ServiceRecord = {
        name,
        state,
        lastChange: this.#now(),
        changes: 0,
        detail,
        setBy: options.setBy,
        ...withEpoch,
      };
      this.#services.set(name, record);
      this.#sorted = null;
      this.#emit("set", record);
      return { record: { ...record }, created: true, stateChanged: true, modified: true };
    }
    const stateChanged = old.state !== state;
    const modified = stateChanged || old.detail !== detail || old.setBy !== options.setBy ||
      old.epoch !== epoch;
    if (!modified) return { record: { ...old }, created: false, stateChanged, modified };
    const record: ServiceRecord = {
      name,
      state,
      lastChange: stateChanged ? this.#now() : old.lastChange,
      changes: stateChanged ? old.changes + 1 : old.changes,
      detail,
      setBy: options.setBy,
      ...withEpoch,
    };
    this.#services.set(name, record);
    this.#sorted = null;
    this.#emit("set", record);
    return { record: { ...record }, created: false, stateChanged, modified };
  }

  /**
   * Removes a service.
   *
   * @param name The service name.
   * @returns The record as it was, or `undefined` if absent.
   */
  delete(name: string): ServiceRecord | undefined {
    const old = this.#services.get(name);
    if (old === undefined) return undefined;
    this.#services.delete(name);
    this.#sorted = null;
    this.#emit("delete", old);
    return { ...old };
  }

  /**
   * Replaces the content with records read from the state file (no events are emitted).
   * Records beyond the limit are refused.
   *
   * @param records Validated records.
   * @throws {TooManyServicesError} When there are more records than the limit allows.
   */
  load(records: readonly ServiceRecord[]): void {
    if (records.length > this.#max) throw new TooManyServicesError(this.#max);
    this.#services.clear();
    for (const r of records) this.#services.set(r.name, { ...r });
    this.#sorted = null;
    this.#version++;
  }

  /**
   * Registers a listener called synchronously after every change.
   *
   * @param listener The callback.
   * @returns A function that removes the listener.
   */
  onChange(listener: ChangeListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #emit(type: "set" | "delete", record: ServiceRecord): void {
    this.#version++;
    const event: ChangeEvent = { type, service: { ...record }, seq: ++this.#seq };
    for (const l of this.#listeners) {
      try {
        l(event);
      } catch {
        // A broken listener must not break the store.
      }
    }
  }
}
