/**
 * The operating-system limits of failsh's sandboxed children: what a script's child may use of
 * memory, tasks and CPU, and how it is watched. See `docs/sandbox.md`, "The child's resources".
 *
 * - **Always** (util-linux `prlimit`, coreutils `nice`): `RLIMIT_DATA` caps the child's
 *   private writable memory (the V8 heap, ArrayBuffers, thread stacks, malloc), which
 *   `--max-old-space-size` alone does not (it caps the JS heap only); no core dumps; nice 10, so
 *   that the supervisor wins the CPU when both want it. `RLIMIT_AS` is useless with V8 (a child
 *   reserves ~18 GiB of address space and dies below 40 GiB), and `RLIMIT_NPROC` is not enforced
 *   for root: see the docs for the figures.
 * - **cgroup v2, when failsh's own cgroup is delegated to it** (systemd `Delegate=yes`): each
 *   child gets its own cgroup with `memory.max` (real resident memory, swap 0), `pids.max`
 *   (threads) and `cpu.max`, and the whole child is killed through `cgroup.kill`.
 * - The supervisor samples each child's CPU time and threads from `/proc/PID/stat`
 *   ({@linkcode readProcStat}) to stop a child that burns CPU while no handler runs.
 *
 * @module
 */

const MiB = 1024 * 1024;

/**
 * Address space V8 reserves writable for its code range in every isolate (512 MiB on x86-64 with
 * Deno 2.9, measured from `/proc/PID/maps`): it counts in `RLIMIT_DATA` although it is never
 * resident. A second isolate (a Worker) cannot reserve its own under the data limit.
 */
export const CODE_RANGE_MB = 512;

/** What a child may use beyond its V8 heap under `RLIMIT_DATA` (buffers, stacks, malloc), MiB. */
export const DATA_SLACK_MB = 128;

/** Most tasks (threads) of one child under cgroup v2 (a child runs 7). */
export const MAX_CHILD_TASKS = 64;

/** The limits of one child. */
export interface ChildLimits {
  /** V8 heap limit (`--max-old-space-size`), MiB. */
  heapMb: number;
  /** `RLIMIT_DATA` (soft and hard), bytes: heap + code range reservation + slack. */
  dataBytes: number;
  /** cgroup v2 `memory.max`, bytes (resident memory: heap + slack + deno's own ~40 MiB). */
  memoryMaxBytes: number;
  /** cgroup v2 `pids.max`. */
  tasksMax: number;
  /** cgroup v2 `cpu.max`: quota and period in µs (one CPU at most). */
  cpuMax: string;
  /** Nice value of the child (the supervisor stays at its own). */
  nice: number;
}

/**
 * The limits of a child whose V8 heap may grow to `memoryMb`.
 *
 * @param memoryMb The heap limit, MiB (default 256).
 * @returns The limits.
 *
 * @example
 * ```ts
 * import { childLimits } from "./limits.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(childLimits(256).dataBytes / 1024 / 1024, 896);
 * ```
 */
export function childLimits(memoryMb = 256): ChildLimits {
  return {
    heapMb: memoryMb,
    dataBytes: (CODE_RANGE_MB + memoryMb + DATA_SLACK_MB) * MiB,
    memoryMaxBytes: (memoryMb + DATA_SLACK_MB + 64) * MiB,
    tasksMax: MAX_CHILD_TASKS,
    cpuMax: "100000 100000",
    nice: 10,
  };
}

function findProgram(candidates: string[]): string | null {
  for (const candidate of candidates) {
    try {
      if (Deno.statSync(candidate).isFile) return candidate;
    } catch {
      // try the next one
    }
  }
  return null;
}

/**
 * The argv prefix that applies `limits` with `prlimit` and `nice` (each left out, and named in
 * `missing`, when the program is not installed).
 *
 * @param limits The limits.
 * @returns The prefix and the programs missing.
 *
 * @example
 * ```ts
 * import { childLimits, limitPrefix } from "./limits.ts";
 * console.log(limitPrefix(childLimits()).argv.join(" "));
 * ```
 */
export function limitPrefix(limits: ChildLimits): { argv: string[]; missing: string[] } {
  const argv: string[] = [];
  const missing: string[] = [];
  const prlimit = findProgram(["/usr/bin/prlimit", "/bin/prlimit"]);
  if (prlimit) {
    argv.push(prlimit, `--data=${limits.dataBytes}:${limits.dataBytes}`, "--core=0:0", "--");
  } else missing.push("prlimit (util-linux)");
  const nice = findProgram(["/usr/bin/nice", "/bin/nice"]);
  if (nice) argv.push(nice, "-n", String(limits.nice));
  else missing.push("nice (coreutils)");
  return { argv, missing };
}

/** A process's CPU time, threads and demand for CPU, from `/proc/PID/stat` and `schedstat`. */
export interface ProcStat {
  /** User + system CPU time of all its threads, ms. */
  cpuMs: number;
  /** Number of threads. */
  threads: number;
  /**
   * Time its main thread ran or waited for a CPU (runnable), ms; `null` when the kernel keeps
   * no `schedstat`. Unlike CPU time, it does not shrink when other processes take the CPU: a
   * loop that never yields is runnable all the time, however busy the machine is.
   */
  runnableMs: number | null;
}

/**
 * Parses `/proc/PID/stat` (fields 14 and 15, utime and stime in clock ticks of 10 ms, which is
 * `USER_HZ` on every Linux architecture failsh runs on; field 20, threads). The command name
 * (field 2) may contain spaces and parentheses: fields are counted after its last `)`.
 *
 * @param text The file's content.
 * @returns The CPU time and threads, or `null` when the text is not a stat line.
 *
 * @example
 * ```ts
 * import { parseProcStat } from "./limits.ts";
 * import { deepEqual } from "node:assert/strict";
 * const line = "42 (de no) S 1 42 42 0 -1 4194560 0 0 0 0 150 50 0 0 30 10 7 0 1 2 3";
 * deepEqual(parseProcStat(line), { cpuMs: 2000, threads: 7 });
 * ```
 */
export function parseProcStat(text: string): { cpuMs: number; threads: number } | null {
  const end = text.lastIndexOf(")");
  if (end < 0) return null;
  // After ") ": field 3 (state) is index 0, so field N is index N - 3.
  const f = text.slice(end + 2).trim().split(/\s+/);
  const utime = Number(f[11]);
  const stime = Number(f[12]);
  const threads = Number(f[17]);
  if (![utime, stime, threads].every((n) => Number.isFinite(n) && f.length > 17)) return null;
  return { cpuMs: (utime + stime) * 10, threads };
}

/**
 * Reads a process's CPU time, threads and runnable time.
 *
 * @param pid The process.
 * @returns Its figures, or `null` when it is gone.
 *
 * @example
 * ```ts
 * import { readProcStat } from "./limits.ts";
 * console.log((await readProcStat(Deno.pid))?.threads);
 * ```
 */
export async function readProcStat(pid: number): Promise<ProcStat | null> {
  let stat;
  try {
    stat = parseProcStat(await Deno.readTextFile(`/proc/${pid}/stat`));
  } catch {
    return null;
  }
  if (stat === null) return null;
  let runnableMs: number | null = null;
  try {
    // "run_ns wait_ns timeslices" of the main thread (where the script's JavaScript runs).
    const [run, wait] = (await Deno.readTextFile(`/proc/${pid}/schedstat`)).split(" ").map(Number);
    if (Number.isFinite(run) && Number.isFinite(wait)) {
      runnableMs = ((run as number) + (wait as number)) / 1e6;
    }
  } catch {
    // no schedstat: CPU time alone
  }
  return { ...stat, runnableMs };
}

/** Where the kernel's files are (tests point these at a fake tree). */
export interface Cgroup2Options {
  /** Content of `/proc/self/mountinfo`. */
  mountinfo?: string;
  /** Content of `/proc/self/cgroup`. */
  selfCgroup?: string;
  /** This process's pid (moved into `supervisor/`). */
  pid?: number;
}

function readOr(path: string, fallback: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return fallback;
  }
}

/** The cgroup v2 mount point in a `mountinfo` text, or `null`. */
function cgroup2Mount(mountinfo: string): string | null {
  for (const line of mountinfo.split("\n")) {
    const [left, right] = line.split(" - ");
    if (right?.split(" ")[0] === "cgroup2") {
      const mountPoint = left?.split(" ")[4];
      if (mountPoint) return mountPoint.replace(/\\040/g, " ");
    }
  }
  return null;
}

/** failsh's own cgroup v2 directory and the controllers it may hand to its children. */
function ownCgroup(options: Cgroup2Options): { dir: string; controllers: string[] } | string {
  const mount = cgroup2Mount(options.mountinfo ?? readOr("/proc/self/mountinfo", ""));
  if (mount === null) return "no cgroup v2 file system is mounted";
  const rel = /^0::(\/.*)$/m.exec(options.selfCgroup ?? readOr("/proc/self/cgroup", ""))?.[1];
  if (rel === undefined) return "failsh is in no cgroup v2";
  const dir = rel === "/" ? mount : `${mount}${rel}`;
  const controllers = readOr(`${dir}/cgroup.controllers`, "").trim().split(/\s+/).filter((c) =>
    c !== ""
  );
  if (!controllers.includes("memory") || !controllers.includes("pids")) {
    return `the cgroup v2 memory and pids controllers are not delegated to failsh's cgroup ${dir} (it has: ${
      controllers.join(" ") || "none"
    })`;
  }
  if (rel === "/") {
    return `failsh runs in the root cgroup ${dir}: give it a delegated cgroup of its own (systemd Delegate=yes)`;
  }
  return { dir, controllers };
}

/**
 * Why cgroup v2 limits cannot be used here, or `null` when failsh's cgroup is delegated to it
 * with the memory and pids controllers (for tests to skip with a reason, and for `--check`).
 *
 * @param options Where the kernel's files are.
 * @returns The reason, or `null`.
 *
 * @example
 * ```ts
 * import { cgroup2Unavailable } from "./limits.ts";
 * console.log(cgroup2Unavailable() ?? "cgroup v2 limits available");
 * ```
 */
export function cgroup2Unavailable(options: Cgroup2Options = {}): string | null {
  const own = ownCgroup(options);
  return typeof own === "string" ? own : null;
}

/**
 * The cgroups of the sandboxed children, below failsh's own delegated cgroup:
 *
 * ```
 * <failsh's cgroup>/            cgroup.subtree_control: +memory +pids (+cpu)
 *   supervisor/                 failsh itself (the "no internal processes" rule of cgroup v2)
 *   children/                   cpu.weight 20: the supervisor wins the CPU under contention
 *     <label>-<n>/              memory.max, memory.swap.max 0, memory.oom.group 1, pids.max, cpu.max
 * ```
 *
 * @example
 * ```ts ignore
 * import { ChildCgroups, childLimits } from "./limits.ts";
 * const cgroups = ChildCgroups.setup();
 * if (typeof cgroups !== "string") {
 *   const dir = cgroups.create("main-1", childLimits());
 *   // spawn with [...cgroups.wrapper(dir), "deno", "run", …]
 * }
 * ```
 */
export class ChildCgroups {
  /** failsh's own cgroup directory. */
  readonly base: string;
  /** The controllers enabled for the children. */
  readonly controllers: string[];

  private constructor(base: string, controllers: string[]) {
    this.base = base;
    this.controllers = controllers;
  }

  /**
   * Moves this process into `supervisor/` and enables the controllers for the children, once;
   * later calls return the same tree.
   *
   * @param options Where the kernel's files are (tests).
   * @returns The tree, or why it cannot be used (nothing was changed then).
   */
  static setup(options: Cgroup2Options = {}): ChildCgroups | string {
    const own = ownCgroup(options);
    if (typeof own === "string") return own;
    const pid = options.pid ?? Deno.pid;
    const { dir } = own;
    const known = setUp.get(dir);
    if (known) return known;
    const others = readOr(`${dir}/cgroup.procs`, "").split("\n").map((l) => l.trim())
      .filter((l) => l !== "" && Number(l) !== pid);
    if (others.length > 0) {
      return `other processes share failsh's cgroup ${dir} (pids ${
        others.slice(0, 5).join(", ")
      }): give failsh a delegated cgroup of its own (systemd Delegate=yes)`;
    }
    const controllers = ["memory", "pids", "cpu"].filter((c) => own.controllers.includes(c));
    const enable = controllers.map((c) => `+${c}`).join(" ");
    try {
      Deno.mkdirSync(`${dir}/supervisor`, { recursive: true });
      Deno.writeTextFileSync(`${dir}/supervisor/cgroup.procs`, `${pid}\n`);
      Deno.writeTextFileSync(`${dir}/cgroup.subtree_control`, enable);
      Deno.mkdirSync(`${dir}/children`, { recursive: true });
      Deno.writeTextFileSync(`${dir}/children/cgroup.subtree_control`, enable);
      if (controllers.includes("cpu")) {
        Deno.writeTextFileSync(`${dir}/children/cpu.weight`, "20");
      }
    } catch (e) {
      return `Cannot set up the children's cgroups in ${dir}: ${(e as Error).message}`;
    }
    const tree = new ChildCgroups(dir, controllers);
    setUp.set(dir, tree);
    return tree;
  }

  /**
   * Creates the cgroup of one child with its limits.
   *
   * @param name A name unique among the running children.
   * @param limits The child's limits.
   * @returns The cgroup's directory.
   * @throws {Error} When the kernel refuses.
   */
  create(name: string, limits: ChildLimits): string {
    const dir = `${this.base}/children/${name}`;
    Deno.mkdirSync(dir, { recursive: true });
    Deno.writeTextFileSync(`${dir}/memory.max`, String(limits.memoryMaxBytes));
    // Not every kernel has swap accounting; the others are required.
    try {
      Deno.writeTextFileSync(`${dir}/memory.swap.max`, "0");
    } catch {
      // no swap controller: nothing to cap
    }
    Deno.writeTextFileSync(`${dir}/memory.oom.group`, "1");
    Deno.writeTextFileSync(`${dir}/pids.max`, String(limits.tasksMax));
    if (this.controllers.includes("cpu")) Deno.writeTextFileSync(`${dir}/cpu.max`, limits.cpuMax);
    return dir;
  }

  /**
   * The argv prefix that moves the child into `dir` before anything of it runs (so that all
   * its memory is charged there: cgroup v2 does not move charges with a process).
   *
   * @param dir A directory from {@linkcode ChildCgroups.create}.
   * @returns `/bin/sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' DIR`.
   */
  wrapper(dir: string): string[] {
    return ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', dir];
  }

  /**
   * Kills every process of a child's cgroup (`cgroup.kill`, Linux 5.14 and later).
   *
   * @param dir The child's cgroup.
   */
  kill(dir: string): void {
    try {
      Deno.writeTextFileSync(`${dir}/cgroup.kill`, "1");
    } catch {
      // older kernel or already gone: the caller kills the process itself
    }
  }

  /**
   * Removes a child's cgroup once its processes are gone.
   *
   * @param dir The child's cgroup.
   */
  remove(dir: string): void {
    try {
      Deno.removeSync(dir);
    } catch {
      // still busy or gone; a fake tree in tests has files in it
    }
  }
}

const setUp = new Map<string, ChildCgroups>();
