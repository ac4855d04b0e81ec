/**
 * The community file of faild: who may read or write which service.
 *
 * One rule a line, as in the original failover: `service-or-glob  community  RO|RW`. The glob may
 * use `*` (any run of characters) and `?` (one character). A community is a shared secret; it never
 * crosses the network: clients sign requests with it and send only its key id (see `lib/sign.ts`).
 * The community `-` stands for unsigned requests: such a line opens the service to anyone with that
 * right (only `RO` is sensible). `#` starts a comment. For a request on service S, the first rule
 * whose glob matches S and whose community is the request's (or `-` for an unsigned request)
 * decides the right.
 *
 * @module
 */
import { keyId } from "../../lib/sign.ts";

/** A right a rule grants. */
export type Right = "RO" | "RW";

/** One line of the community file. */
export interface CommunityRule {
  /** The service name or glob as written. */
  pattern: string;
  /** The compiled glob. */
  regex: RegExp;
  /** Key id of the community, or `null` for the unsigned community `-`. */
  keyId: string | null;
  /** The right granted. */
  right: Right;
  /** Line number in the file (1-based). */
  line: number;
}

/** A parsed community file. */
export interface CommunityRules {
  /** The rules in file order. */
  rules: CommunityRule[];
  /** Community (secret) by key id, to verify signatures. */
  keys: Map<string, string>;
  /** Sentences about risky but valid lines (e.g. unsigned write access). */
  warnings: string[];
}

/** Most rules a community file may hold. */
export const MAX_RULES = 10_000;

/** Longest community file faild reads, in bytes. */
export const MAX_COMMUNITY_FILE_BYTES = 1024 * 1024;

const GLOB_PATTERN = /^[A-Za-z0-9._*?-]{1,64}$/;

/**
 * Compiles a service glob (`*`, `?`) into an anchored regular expression.
 *
 * @param glob A pattern made of name characters, `*` and `?`.
 * @returns The regular expression.
 *
 * @example
 * ```ts
 * import { globToRegExp } from "./community.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(globToRegExp("web*").test("web-1"), true);
 * ```
 */
export function globToRegExp(glob: string): RegExp {
  let source = "^";
  for (const ch of glob) {
    if (ch === "*") source += ".*";
    else if (ch === "?") source += ".";
    else source += ch.replace(/[.\\^$+()[\]{}|]/g, "\\$&");
  }
  return new RegExp(source + "$");
}

/**
 * Parses the text of a community file.
 *
 * @param text The file's content.
 * @param options `file` names the file in error messages.
 * @returns The rules and the communities by key id.
 * @throws {SyntaxError} Naming the file and line of the first malformed rule.
 *
 * @example
 * ```ts
 * import { parseCommunity } from "./community.ts";
 * import { deepEqual } from "node:assert/strict";
 * const c = parseCommunity("web*  s3cret-one  RW\n*  -  RO  # anyone may read\n");
 * deepEqual([c.rules.length, c.keys.size], [2, 1]);
 * ```
 */
export function parseCommunity(text: string, options: { file?: string } = {}): CommunityRules {
  const where = options.file ?? "community file";
  const rules: CommunityRule[] = [];
  const keys = new Map<string, string>();
  const warnings: string[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!;
    const hash = raw.search(/(^|\s)#/);
    const content = (hash >= 0 ? raw.slice(0, hash) : raw).trim();
    if (content === "") continue;
    const at = `Invalid ${where} line ${i + 1}`;
    const fields = content.split(/\s+/);
    if (fields.length !== 3) {
      throw new SyntaxError(
        `${at}: expected "service-or-glob  community  RO|RW", found ${fields.length} field(s)`,
      );
    }
    const [pattern, community, rightText] = fields as [string, string, string];
    if (!GLOB_PATTERN.test(pattern)) {
      throw new SyntaxError(
        `${at}: "${pattern}" is not a service name or glob (letters, digits, ".", "_", "-", "*", ` +
          `"?"; at most 64 characters)`,
      );
    }
    const right = rightText.toUpperCase();
    if (right !== "RO" && right !== "RW") {
      throw new SyntaxError(`${at}: right "${rightText}" must be RO or RW`);
    }
    let id: string | null = null;
    if (community === "-") {
      if (right === "RW") {
        warnings.push(`${where} line ${i + 1} lets unsigned requests write ${pattern}`);
      }
    } else {
      if (community.length < 8) {
        warnings.push(`${where} line ${i + 1} has a community shorter than 8 characters`);
      }
      id = keyId(community);
      keys.set(id, community);
    }
    if (rules.length >= MAX_RULES) {
      throw new SyntaxError(`${at}: more than ${MAX_RULES} rules`);
    }
    rules.push({ pattern, regex: globToRegExp(pattern), keyId: id, right, line: i + 1 });
  }
  return { rules, keys, warnings };
}

/**
 * Reads and parses a community file, and warns when others may read it.
 *
 * @param path The file.
 * @returns The rules; a warning is added when the file is readable by every user.
 * @throws {SyntaxError} On a malformed line; an `Error` naming the file when it cannot be read.
 *
 * @example
 * ```ts ignore
 * import { loadCommunityFile } from "./community.ts";
 * const rules = await loadCommunityFile("/etc/failover/community");
 * ```
 */
export async function loadCommunityFile(path: string): Promise<CommunityRules> {
  let info: Deno.FileInfo;
  let text: string;
  try {
    info = await Deno.stat(path);
    if (info.size > MAX_COMMUNITY_FILE_BYTES) {
      throw new RangeError(`larger than ${MAX_COMMUNITY_FILE_BYTES} bytes`);
    }
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw new Error(`Cannot read community file ${path}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  const parsed = parseCommunity(text, { file: path });
  if (info.mode !== null && (info.mode & 0o004) !== 0 && parsed.keys.size > 0) {
    parsed.warnings.push(`community file ${path} is readable by every user: chmod o-r it`);
  }
  return parsed;
}

/**
 * The right a caller has on a service: the first rule whose glob matches and whose community is
 * the caller's (`null` key id: an unsigned caller, matched by `-` rules only).
 *
 * @param rules The parsed community file.
 * @param service The service name (use `*` for daemon-wide operations such as log levels).
 * @param callerKeyId The verified key id, or `null` for an unsigned request.
 * @returns `RO`, `RW`, or `null` when no rule grants anything.
 *
 * @example
 * ```ts
 * import { accessFor, parseCommunity } from "./community.ts";
 * import { deepEqual } from "node:assert/strict";
 * const c = parseCommunity("db  -  RO\n");
 * deepEqual([accessFor(c, "db", null), accessFor(c, "web", null)], ["RO", null]);
 * ```
 */
export function accessFor(
  rules: CommunityRules,
  service: string,
  callerKeyId: string | null,
): Right | null {
  for (const rule of rules.rules) {
    if (rule.keyId === callerKeyId && rule.regex.test(service)) return rule.right;
  }
  return null;
}

/**
 * Whether any rule exists for the caller at all (to tell "not covered" from "unknown caller").
 *
 * @param rules The parsed community file.
 * @param callerKeyId The verified key id, or `null` for unsigned.
 * @returns `true` when at least one rule names the caller's community.
 *
 * @example
 * ```ts
 * import { hasRulesFor, parseCommunity } from "./community.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(hasRulesFor(parseCommunity("db  -  RO\n"), null), true);
 * ```
 */
export function hasRulesFor(rules: CommunityRules, callerKeyId: string | null): boolean {
  return rules.rules.some((r) => r.keyId === callerKeyId);
}
