/**
 * The module-graph check of failsh's sandbox: what a failover script may load.
 *
 * deno loads a script's module graph (its static imports, its dynamic imports of literal
 * specifiers and template literals, and the files those import) **before** the read permission
 * applies to the script: a script started with `--deny-read` can still
 * `import key from "/etc/failover/cluster.key" with { type: "text" }`, and a computed `import()`
 * of a path written literally anywhere in the script reaches the module already loaded. So the
 * supervisor asks deno itself for the graph (`deno info --json`, with the child's flags) before
 * the child runs, and refuses the script unless every local module in it is
 *
 * - a JavaScript or TypeScript file (by the extension of the file it really is, after symlinks,
 *   and by deno's media type): never a `text`, `bytes` or `json` import, never a file deno would
 *   parse as code although it is not (its parse error would quote the file);
 * - under the script's directory, the failover project (where `mod.ts` is) or one of the
 *   policy's `read` paths, compared after resolving symlinks;
 * - not one of the policy's key files.
 *
 * `node:` built-ins are allowed (their file and network access goes through deno's
 * permissions); `data:` modules carry their code inline and their imports are checked like
 * the script's. A module deno cannot find is left to deno, which says so when it is loaded.
 *
 * @module
 */
import { killAfter, killQuietly } from "../../lib/process.ts";
import { fileURLToPath } from "node:url";
import type { Policy } from "../contract.ts";
import { checkReadPaths, childUserIds, readableBy } from "./read_paths.ts";
import { CHILD_ENTRY_FILES } from "./command.ts";
import { ScriptError } from "../errors.ts";

/** Extensions of the files a script may load as code (`.d.ts` ends in `.ts`). */
export const CODE_EXTENSIONS: readonly string[] = [
  ".ts",
  ".tsx",
  ".mts",
  ".cts",
  ".js",
  ".jsx",
  ".mjs",
  ".cjs",
];

/** deno's media types of code modules (`deno info --json`, `mediaType`). */
const CODE_MEDIA_TYPES = new Set([
  "JavaScript",
  "Jsx",
  "Mjs",
  "Cjs",
  "TypeScript",
  "Mts",
  "Cts",
  "Dts",
  "Dmts",
  "Dcts",
  "Tsx",
]);

/** Most bytes of `deno info --json` read (a larger graph is refused). */
export const MAX_GRAPH_JSON = 32 * 1024 * 1024;

/** Heap (RLIMIT_DATA) of the `deno info` process: a script importing `/dev/zero` cannot eat memory. */
const GRAPH_MEMORY_BYTES = 512 * 1024 * 1024;

/** The failover project's directory (where `mod.ts` is). */
const PROJECT_DIR = fileURLToPath(new URL("../../", import.meta.url)).replace(/\/$/, "") || "/";

/** One import the sandbox refuses. */
export interface GraphProblem {
  /** Where the import is written: `failover.ts:3:15` (relative to the script's directory). */
  at: string;
  /** The specifier as written in the importing module. */
  specifier: string;
  /** The module it resolves to (a `file:` URL, or another scheme). */
  resolved: string;
  /** The import attribute type (`text`, `json`, `bytes`), or `null` for a code import. */
  type: string | null;
  /** Which rule: `key`, `outside` or `not-code`. */
  rule: "key" | "outside" | "not-code";
  /** One line saying what is refused and why: `failover.ts:1:15 imports "…": …`. */
  message: string;
}

/** What {@linkcode checkModuleGraph} found. */
export interface GraphReport {
  /** The local files of the graph (real paths), in deno's order. */
  files: string[];
  /** The directories code may be loaded from (real paths). */
  roots: string[];
  /** The imports refused; empty when the script may run. */
  problems: GraphProblem[];
}

/** Options of {@linkcode checkModuleGraph}. */
export interface GraphOptions {
  /** Directories (or files) code may be loaded from, besides the script's and the project's. */
  read?: readonly string[];
  /** Files never loaded, with a name for messages (the policy's keys). */
  forbidden?: ReadonlyArray<{ path: string; name: string }>;
  /** The deno executable (default `Deno.execPath()`): the one the child runs. */
  denoPath?: string;
  /** Argv prefix `deno info` runs under (the child's confinement, e.g. `setpriv …`). */
  prefix?: readonly string[];
  /** Environment of `deno info` (default: the current one). */
  env?: Record<string, string>;
  /** Time limit of `deno info`, ms (default 20000). */
  timeoutMs?: number;
}

/** A script whose module graph breaks the sandbox's rules; `problems` lists each import. */
export class ModuleGraphError extends ScriptError {
  /** The imports refused (empty when the graph could not be built at all). */
  readonly problems: GraphProblem[];

  /**
   * Creates the error.
   *
   * @param message The whole message (one `  - ` line per problem).
   * @param problems The imports refused.
   */
  constructor(message: string, problems: GraphProblem[] = []) {
    super(message);
    this.name = "ModuleGraphError";
    this.problems = problems;
  }
}

function realPathOrNull(path: string): string | null {
  try {
    return Deno.realPathSync(path);
  } catch {
    return null;
  }
}

/** `inode:DEV:INO` of a file, or `null`. */
function inodeOf(path: string): string | null {
  try {
    const info = Deno.statSync(path);
    return info.ino === null ? null : `inode:${info.dev}:${info.ino}`;
  } catch {
    return null;
  }
}

function isUnder(path: string, root: string): boolean {
  return root === "/" || path === root || path.startsWith(root + "/");
}

function dirOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

function hasCodeExtension(path: string): boolean {
  return CODE_EXTENSIONS.some((e) => path.endsWith(e));
}

/**
 * The directories a script may load code from: its own directory (as written and, when the
 * script is a symlink, its target's), the failover project, and the policy's `read` paths; all
 * resolved to real paths.
 *
 * @param script The script (absolute path).
 * @param read The policy's `read` paths.
 * @returns The real paths, without duplicates (missing ones left out).
 *
 * @example
 * ```ts
 * import { allowedRoots } from "./module_graph.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(allowedRoots(new URL(import.meta.url).pathname, []).length >= 1, true);
 * ```
 */
export function allowedRoots(script: string, read: readonly string[]): string[] {
  const candidates = [dirOf(script), PROJECT_DIR, ...read];
  const real = realPathOrNull(script);
  if (real !== null) candidates.splice(1, 0, dirOf(real));
  const roots: string[] = [];
  for (const c of candidates) {
    const r = realPathOrNull(c);
    if (r !== null && !roots.includes(r)) roots.push(r);
  }
  return roots;
}

interface InfoDependency {
  specifier?: string;
  code?: { specifier?: string; span?: Span };
  type?: { specifier?: string; span?: Span };
  assertionType?: string;
}
interface Span {
  start?: { line?: number; character?: number };
}
interface InfoModule {
  specifier?: string;
  kind?: string;
  mediaType?: string;
  error?: string;
  dependencies?: InfoDependency[];
  typesDependency?: { specifier?: string; dependency?: { specifier?: string; span?: Span } };
}

async function readBounded(stream: ReadableStream<Uint8Array>, max: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += chunk.length;
    if (size > max) throw new RangeError(`more than ${max} bytes`);
    chunks.push(chunk);
  }
  const out = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

function prlimitPrefix(): string[] {
  for (const candidate of ["/usr/bin/prlimit", "/bin/prlimit"]) {
    try {
      if (Deno.statSync(candidate).isFile) return [candidate, `--data=${GRAPH_MEMORY_BYTES}`];
    } catch {
      // try the next one
    }
  }
  return [];
}

/** Runs `deno info --json` with the child's flags and returns its modules. */
async function denoInfo(script: string, options: GraphOptions): Promise<InfoModule[]> {
  const timeoutMs = options.timeoutMs ?? 20_000;
  const argv = [
    ...prlimitPrefix(),
    ...(options.prefix ?? []),
    options.denoPath ?? Deno.execPath(),
    "info",
    "--json",
    "--no-config",
    "--no-lock",
    "--no-remote",
    "--no-npm",
    "--deny-import",
    script,
  ];
  const [cmd, ...args] = argv;
  const child = new Deno.Command(cmd as string, {
    args,
    cwd: "/",
    stdin: "null",
    stdout: "piped",
    stderr: "null",
    ...(options.env ? { clearEnv: true, env: options.env } : {}),
  }).spawn();
  const limit = killAfter(child, timeoutMs);
  let bytes: Uint8Array;
  let status: Deno.CommandStatus;
  try {
    bytes = await readBounded(child.stdout, MAX_GRAPH_JSON).catch((e) => {
      killQuietly(child);
      throw e;
    });
    status = await child.status;
  } catch (e) {
    await child.status.catch(() => {});
    throw new ModuleGraphError(
      `Cannot run the script ${script}: its module graph is larger than ${MAX_GRAPH_JSON} bytes of JSON (${
        (e as Error).message
      })`,
    );
  } finally {
    limit.clear();
  }
  if (limit.timedOut) {
    throw new ModuleGraphError(
      `Cannot run the script ${script}: deno could not list its modules within ${timeoutMs} ms (does it import a device, a pipe or a whole directory tree?)`,
    );
  }
  if (!status.success) {
    throw new ModuleGraphError(
      `Cannot run the script ${script}: deno could not list its modules (deno info exited with ${
        status.signal ? `signal ${status.signal}` : `code ${status.code}`
      }; run "deno info ${script}" to see why)`,
    );
  }
  try {
    const parsed = JSON.parse(new TextDecoder().decode(bytes)) as { modules?: unknown };
    if (!Array.isArray(parsed.modules)) throw new TypeError("no modules list");
    return parsed.modules as InfoModule[];
  } catch (e) {
    throw new ModuleGraphError(
      `Cannot run the script ${script}: deno info printed no module list (${(e as Error).message})`,
    );
  }
}

/** Who imports what: resolved specifier -> the first import of it found. */
function importsByTarget(
  modules: InfoModule[],
): Map<string, { importer: string; dep: InfoDependency; span: Span | undefined }> {
  const map = new Map<string, { importer: string; dep: InfoDependency; span: Span | undefined }>();
  for (const m of modules) {
    const importer = m.specifier ?? "?";
    for (const dep of m.dependencies ?? []) {
      for (const side of [dep.code, dep.type]) {
        if (side?.specifier && !map.has(side.specifier)) {
          map.set(side.specifier, { importer, dep, span: side.span });
        }
      }
    }
    const t = m.typesDependency;
    if (t?.dependency?.specifier && !map.has(t.dependency.specifier)) {
      map.set(t.dependency.specifier, {
        importer,
        dep: { specifier: t.specifier ?? t.dependency.specifier },
        span: t.dependency.span,
      });
    }
  }
  return map;
}

function shorten(text: string, max = 80): string {
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

/**
 * Lists the script's module graph with deno itself and checks every module against the
 * sandbox's rules (see the module documentation). Nothing of the script runs.
 *
 * @param script The script (absolute path).
 * @param options The policy's read paths and key files, the deno executable, a time limit.
 * @returns The files of the graph, the allowed roots and every import refused.
 * @throws {ModuleGraphError} When deno cannot list the graph in time (or at all).
 *
 * @example
 * ```ts ignore
 * import { checkModuleGraph } from "./module_graph.ts";
 * const report = await checkModuleGraph("/etc/failover/failover.ts", { read: [] });
 * for (const p of report.problems) console.log(p.message);
 * ```
 */
export async function checkModuleGraph(
  script: string,
  options: GraphOptions = {},
): Promise<GraphReport> {
  const roots = allowedRoots(script, options.read ?? []);
  const forbidden = new Map<string, string>();
  for (const f of options.forbidden ?? []) {
    forbidden.set(f.path, f.name);
    const real = realPathOrNull(f.path);
    if (real !== null) forbidden.set(real, f.name);
    // A hard link to the key is the key under another name (and maybe a code extension).
    const id = inodeOf(f.path);
    if (id !== null) forbidden.set(id, f.name);
  }
  const modules = await denoInfo(script, options);
  const rootUrl = new URL(`file://${script}`).href;
  const imports = importsByTarget(modules);
  const scriptDir = dirOf(script);
  const where = (importer: string, span: Span | undefined): string => {
    let name = importer;
    if (importer.startsWith("file:")) {
      const path = fileURLToPath(importer);
      name = isUnder(path, scriptDir) ? path.slice(scriptDir.length + 1) || path : path;
    } else name = shorten(importer, 60);
    const line = (span?.start?.line ?? -1) + 1;
    const col = (span?.start?.character ?? -1) + 1;
    return line > 0 ? `${name}:${line}:${col}` : name;
  };
  const files: string[] = [];
  const problems: GraphProblem[] = [];
  for (const m of modules) {
    const specifier = m.specifier ?? "";
    const scheme = specifier.slice(0, specifier.indexOf(":") + 1);
    // Only file: modules read local files. node: built-ins go through deno's permissions; data:
    // modules carry their code inline (their imports are modules of the graph too); npm:, jsr:
    // and remote modules are refused by the child itself (--no-npm, --no-remote, --cached-only).
    if (scheme !== "file:") continue;
    const via = imports.get(specifier);
    const type = via?.dep.assertionType ?? null;
    const problem = (rule: GraphProblem["rule"], reason: string) => {
      const at = via ? where(via.importer, via.span) : "the script";
      const written = via?.dep.specifier ?? specifier;
      problems.push({
        at,
        specifier: written,
        resolved: specifier,
        type,
        rule,
        message: `${at} imports ${JSON.stringify(shorten(written, 200))}${
          type ? ` (type ${JSON.stringify(type)})` : ""
        }: ${reason}`,
      });
    };
    const path = fileURLToPath(specifier);
    const real = realPathOrNull(path);
    const target = real ?? path;
    if (real !== null) files.push(real);
    const link = real !== null && real !== path ? `it is a link to ${real}, ` : "";
    const id = real === null ? null : inodeOf(real);
    const key = forbidden.get(target) ?? forbidden.get(path) ??
      (id === null ? undefined : forbidden.get(id));
    if (key !== undefined) {
      problem(
        "key",
        `${link}the secret of key ${JSON.stringify(key)}: a script never loads a key file`,
      );
      continue;
    }
    if (!roots.some((r) => isUnder(target, r))) {
      problem(
        "outside",
        `${link}outside the directories code may be loaded from (${roots.join(", ")})`,
      );
      continue;
    }
    // Missing modules are deno's to report (an optional dynamic import may never run).
    if (real === null) continue;
    const isRoot = specifier === rootUrl;
    const codeFile = isRoot || (hasCodeExtension(real) && hasCodeExtension(path));
    const codeModule = m.error !== undefined ||
      (m.kind === "esm" && CODE_MEDIA_TYPES.has(m.mediaType ?? ""));
    if (type !== null || !codeFile || !codeModule) {
      problem(
        "not-code",
        `${link}only JavaScript and TypeScript files (${
          CODE_EXTENSIONS.join(", ")
        }) may be imported, as code: a text, bytes or JSON import, or a file deno would parse as code, hands the script its content without the read permission`,
      );
    }
    // A code file inside the roots that fails to parse is the operator's to fix: deno says where.
  }
  return { files, roots, problems };
}

/** With `childUser`: the child must really switch, and read its code and the `read` paths. */
function checkChildUser(policy: Policy, files: string[], prefix: readonly string[]): string[] {
  if (policy.childUser === null || policy.childUser === undefined) return [];
  let ids;
  try {
    ids = childUserIds(policy);
  } catch (e) {
    return [(e as Error).message];
  }
  if (ids === null) return [];
  const who = `${ids.uid}:${ids.gid}`;
  if (!prefix.includes(`--reuid=${ids.uid}`)) {
    return [
      `childUser ${policy.childUser} cannot be honoured: the child is not started under setpriv`,
    ];
  }
  const problems: string[] = [];
  for (const f of [...new Set([...files, ...policy.read])]) {
    let exists = true;
    try {
      Deno.statSync(f);
    } catch {
      exists = false;
    }
    if (exists && !readableBy(f, ids)) {
      problems.push(
        `${f} is not readable by the child's user ${who} (childUser): make it readable by that user (and the directories above it searchable), or set childUser to null`,
      );
    }
  }
  return problems;
}

/**
 * Checks what a script could read before it runs: the policy's `read` paths on disk (no symlink
 * leading out of them, see `checkReadPaths`) and the script's module graph (see
 * {@linkcode checkModuleGraph}). Each problem is an audit line (`"op":"read-path"` or
 * `"op":"import"`, verdict `refused`); any problem throws.
 *
 * @param script The script (absolute path).
 * @param policy The policy.
 * @param options How to run deno (`denoPath`, `prefix`, `env`, `timeoutMs`) and where to record
 *   refusals (`audit`, with the `write` method of `AuditLog`).
 * @returns The graph report (no problem) when the script may run.
 * @throws {ModuleGraphError} Listing every problem (one `  - ` line each).
 *
 * @example
 * ```ts ignore
 * import { assertScriptAccess } from "./module_graph.ts";
 * import { loadPolicy } from "./policy.ts";
 * const policy = await loadPolicy("/etc/failover/policy.json");
 * await assertScriptAccess("/etc/failover/failover.ts", policy);
 * ```
 */
export async function assertScriptAccess(
  script: string,
  policy: Policy,
  options: Omit<GraphOptions, "read" | "forbidden"> & {
    audit?: {
      write(
        service: string | null,
        request: Record<string, unknown>,
        verdict: "refused",
        reason: string,
      ): unknown;
    };
  } = {},
): Promise<GraphReport> {
  const { audit, ...rest } = options;
  const readProblems = checkReadPaths(policy);
  for (const p of readProblems.slice(0, 20)) {
    audit?.write(null, { op: "read-path" }, "refused", p);
  }
  let report: GraphReport;
  try {
    report = await checkModuleGraph(script, {
      ...rest,
      read: policy.read,
      forbidden: Object.entries(policy.keys).map(([name, k]) => ({ path: k.file, name })),
    });
  } catch (e) {
    audit?.write(null, { op: "import", script }, "refused", (e as Error).message);
    throw e;
  }
  const userProblems = checkChildUser(
    policy,
    [...report.files, ...CHILD_ENTRY_FILES],
    rest.prefix ?? [],
  );
  for (const p of userProblems.slice(0, 20)) {
    audit?.write(null, { op: "child-user" }, "refused", p);
  }
  readProblems.push(...userProblems);
  if (report.problems.length === 0 && readProblems.length === 0) return report;
  const shown = report.problems.slice(0, 20);
  for (const p of shown) {
    audit?.write(
      null,
      {
        op: "import",
        specifier: shorten(p.specifier, 500),
        resolved: shorten(p.resolved, 500),
        from: p.at,
        type: p.type,
      },
      "refused",
      p.message,
    );
  }
  const more = report.problems.length - shown.length;
  if (more > 0) {
    audit?.write(null, { op: "import", script }, "refused", `${more} more imports refused`);
  }
  const items = [...readProblems, ...shown.map((p) => p.message)];
  if (more > 0) items.push(`and ${more} more imports`);
  throw new ModuleGraphError(
    `Cannot run the script ${script}: it could read what the policy does not allow:\n  - ${
      items.join("\n  - ")
    }`,
    report.problems,
  );
}
