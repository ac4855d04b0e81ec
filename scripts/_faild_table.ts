/**
 * Tables shared by failc and failstat (their exit codes are `lib/cli.ts`'s).
 *
 * @module
 */
import Table from "cli-table3";
import type { ServiceRecord, ServiceState } from "../lib/types.ts";

/**
 * Whether to colour the output: stdout is a terminal and `NO_COLOR` is unset.
 *
 * @returns `true` to colour.
 */
export function useColour(): boolean {
  try {
    if (Deno.env.get("NO_COLOR") !== undefined) return false;
  } catch {
    // Without --allow-env, decide on the terminal alone.
  }
  return Deno.stdout.isTerminal();
}

const COLOURS: Record<ServiceState, string> = {
  UP: "\x1b[32m",
  RECOVER: "\x1b[33m",
  FAIL: "\x1b[31m",
};

/**
 * A state, coloured for a terminal if asked.
 *
 * @param state The state.
 * @param colour Whether to colour.
 * @returns The text.
 */
export function stateText(state: ServiceState, colour: boolean): string {
  return colour ? `${COLOURS[state]}${state}\x1b[0m` : state;
}

/**
 * A timestamp as `YYYY-MM-DD HH:MM:SSZ (age ago)`.
 *
 * @param ms The time, ms since the epoch.
 * @param now The reference clock (faild's, when known).
 * @returns The text.
 */
export function timeText(ms: number, now: number): string {
  const iso = new Date(ms).toISOString().replace("T", " ").slice(0, 19) + "Z";
  return `${iso} (${ageText(Math.max(0, now - ms))} ago)`;
}

/**
 * A duration in ms as e.g. `3d4h`, `5m12s`, `800ms`.
 *
 * @param ms The duration.
 * @returns The text.
 */
export function ageText(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  let s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d > 0) return `${d}d${h}h`;
  if (h > 0) return `${h}h${m}m`;
  if (m > 0) return `${m}m${s}s`;
  return `${s}s`;
}

function plainTable(head: string[]): InstanceType<typeof Table> {
  return new Table({ head, style: { head: [], border: [] } });
}

/**
 * A table of services, one a row.
 *
 * @param services The records.
 * @param options Reference clock and colouring.
 * @returns The table text.
 */
export function servicesTable(
  services: readonly ServiceRecord[],
  options: { now: number; colour: boolean },
): string {
  const t = plainTable(["SERVICE", "STATE", "CHANGES", "LAST CHANGE", "SET BY", "DETAIL"]);
  for (const s of services) {
    t.push([
      s.name,
      stateText(s.state, options.colour),
      String(s.changes),
      timeText(s.lastChange, options.now),
      s.setBy,
      s.detail.length > 60 ? s.detail.slice(0, 57) + "..." : s.detail,
    ]);
  }
  return t.toString();
}

/**
 * One service as a two-column table.
 *
 * @param s The record.
 * @param options Reference clock and colouring.
 * @returns The table text.
 */
export function recordTable(
  s: ServiceRecord,
  options: { now: number; colour: boolean },
): string {
  const t = plainTable(["FIELD", "VALUE"]);
  t.push(
    ["service", s.name],
    ["state", stateText(s.state, options.colour)],
    ["changes", String(s.changes)],
    ["last change", timeText(s.lastChange, options.now)],
    ["set by", s.setBy],
    ["detail", s.detail],
  );
  if (s.epoch !== undefined) t.push(["arbiter epoch", s.epoch]);
  return t.toString();
}
