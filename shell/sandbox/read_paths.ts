/**
 * What the policy lets the child read, checked on disk: the user the child runs as
 * ({@linkcode childUserIds}) and what that user may read ({@linkcode readableBy}), and the
 * symlinks and hard links inside the `read` paths ({@linkcode checkReadPaths}). See
 * `docs/sandbox.md`, "The `read` paths and symlinks".
 *
 * @module
 */
import type { Policy } from "../contract.ts";

/** A user and group id. */
export interface UserIds {
  /** The user id. */
  uid: number;
  /** The (primary) group id. */
  gid: number;
}

/**
 * The ids of the policy's `childUser`: `UID:GID` as given, or a name looked up in `/etc/passwd`
 * (with its primary group).
 *
 * @param policy The policy.
 * @param passwd The text of `/etc/passwd` (default: read it).
 * @returns The ids, or `null` when `childUser` is `null`.
 * @throws {Error} When the name is not in `/etc/passwd` (or it cannot be read).
 *
 * @example
 * ```ts
 * import { parsePolicy } from "./policy.ts";
 * import { childUserIds } from "./read_paths.ts";
 * const policy = parsePolicy('{"host":"a","childUser":"nobody"}', "/tmp/p.json");
 * console.log(childUserIds(policy, "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"));
 * // { uid: 65534, gid: 65534 }
 * ```
 */
export function childUserIds(policy: Policy, passwd?: string): UserIds | null {
  const spec = policy.childUser;
  if (spec === null || spec === undefined) return null;
  const numeric = /^([0-9]+):([0-9]+)$/.exec(spec);
  if (numeric) return { uid: Number(numeric[1]), gid: Number(numeric[2]) };
  let text = passwd;
  if (text === undefined) {
    try {
      text = Deno.readTextFileSync("/etc/passwd");
    } catch (e) {
      throw new Error(`Cannot find childUser ${spec}: ${(e as Error).message}`);
    }
  }
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f[0] === spec && f.length >= 4) return { uid: Number(f[2]), gid: Number(f[3]) };
  }
  throw new Error(`Cannot find childUser ${spec}: no such user in /etc/passwd`);
}

/**
 * Tells whether a user (with only its primary group) may read a path: search permission on every
 * directory above it, read permission on it (and search, for a directory), from the mode bits
 * (ACLs are not consulted).
 *
 * @param path An absolute path.
 * @param ids The user.
 * @returns `true` when readable; `false` when not, or when the path does not exist.
 *
 * @example
 * ```ts
 * import { readableBy } from "./read_paths.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(readableBy("/", { uid: 65534, gid: 65534 }), true);
 * ```
 */
export function readableBy(path: string, ids: UserIds): boolean {
  const allows = (info: Deno.FileInfo, bit: number): boolean => {
    const mode = info.mode ?? 0;
    if (info.uid === ids.uid) return (mode & (bit << 6)) !== 0;
    if (info.gid === ids.gid) return (mode & (bit << 3)) !== 0;
    return (mode & bit) !== 0;
  };
  const parts = path.split("/").filter((p) => p !== "");
  let dir = "";
  try {
    for (let i = 0; i < parts.length; i++) {
      const info = Deno.statSync(dir === "" ? "/" : dir);
      if (!allows(info, 1)) return false;
      dir += "/" + parts[i];
    }
    const info = Deno.statSync(path);
    return allows(info, 4) && (!info.isDirectory || allows(info, 1));
  } catch {
    return false;
  }
}

/** Most directory entries {@linkcode checkReadPaths} walks (a larger `read` tree is refused). */
export const MAX_READ_ENTRIES = 20_000;

function realOrNull(path: string): string | null {
  try {
    return Deno.realPathSync(path);
  } catch {
    return null;
  }
}

function under(path: string, root: string): boolean {
  return root === "/" || path === root || path.startsWith(root + "/");
}

/**
 * Checks the policy's `read` paths on disk, where symlinks are. deno's `--allow-read` checks a
 * path as written (after removing `.` and `..`) and the kernel then follows symlinks, so a link
 * inside a readable directory lets the script read its target. Refused: a link (to a file or a
 * directory, dangling or not) whose target is outside every `read` path (after resolving
 * symlinks) or is a key file, a hard link to a key file, and a `read` path whose real location
 * holds a key file.
 *
 * @param policy The policy (`read` and `keys`, absolute paths).
 * @param options `maxEntries` walked in all (default {@linkcode MAX_READ_ENTRIES}).
 * @returns One sentence per problem, each naming `read[i]`; empty when the paths are safe.
 *
 * @example
 * ```ts
 * import { parsePolicy } from "./policy.ts";
 * import { checkReadPaths } from "./read_paths.ts";
 * import { deepEqual } from "node:assert/strict";
 * const policy = parsePolicy('{"host":"a","read":["/nonexistent-failover-dir"]}', "/tmp/p.json");
 * deepEqual(checkReadPaths(policy), []);
 * ```
 */
export function checkReadPaths(policy: Policy, options: { maxEntries?: number } = {}): string[] {
  const maxEntries = options.maxEntries ?? MAX_READ_ENTRIES;
  const problems: string[] = [];
  const keys: { name: string; file: string; real: string; inode: string | null }[] = [];
  const inodeOf = (path: string): string | null => {
    try {
      const info = Deno.statSync(path);
      return info.ino === null ? null : `${info.dev}:${info.ino}`;
    } catch {
      return null;
    }
  };
  for (const [name, k] of Object.entries(policy.keys)) {
    keys.push({ name, file: k.file, real: realOrNull(k.file) ?? k.file, inode: inodeOf(k.file) });
  }
  const roots = policy.read.map((r) => realOrNull(r));
  const inRoots = (p: string) => roots.some((r) => r !== null && under(p, r));
  let entries = 0;
  policy.read.forEach((read, i) => {
    const real = roots[i];
    if (real === null || real === undefined) return; // missing: deno denies it anyway
    const shown = real === read ? read : `${read} is ${real}, which`;
    for (const k of keys) {
      if (under(k.real, real)) {
        problems.push(
          `read[${i}] ${shown} holds the secret of key ${JSON.stringify(k.name)} (${k.file})`,
        );
      }
    }
    // Walk the tree without following links: every link must stay inside the read paths.
    const stack: [real: string, shown: string][] = [[real, read]];
    while (stack.length > 0) {
      const [dir, dirShown] = stack.pop()!;
      let list: Deno.DirEntry[];
      try {
        list = [...Deno.readDirSync(dir)];
      } catch {
        continue; // a file, or unreadable: nothing below it
      }
      for (const e of list) {
        if (++entries > maxEntries) {
          problems.push(
            `read[${i}] ${read} holds more than ${maxEntries} entries: failsh cannot check them for symlinks leading out of the read paths; give narrower read paths`,
          );
          return;
        }
        const path = `${dir}/${e.name}`;
        const pathShown = `${dirShown}/${e.name}`;
        if (e.isDirectory) {
          stack.push([path, pathShown]);
          continue;
        }
        if (!e.isSymlink) {
          // A hard link to a key is the key under another name.
          const inode = keys.length > 0 ? inodeOf(path) : null;
          const key = inode === null ? undefined : keys.find((k) => k.inode === inode);
          if (key) {
            problems.push(
              `read[${i}] ${read} holds ${pathShown}, a hard link to the secret of key ${
                JSON.stringify(key.name)
              } (${key.file})`,
            );
          }
          continue;
        }
        let target = realOrNull(path);
        if (target === null) {
          // Dangling: judge where it would lead once its target exists.
          try {
            const text = Deno.readLinkSync(path);
            target = text.startsWith("/") ? text : `${dir}/${text}`;
            target = "/" + target.split("/").reduce<string[]>((acc, part) => {
              if (part === "..") acc.pop();
              else if (part !== "" && part !== ".") acc.push(part);
              return acc;
            }, []).join("/");
          } catch {
            continue;
          }
        }
        const key = keys.find((k) => k.real === target);
        const holds = keys.find((k) => under(k.real, target as string));
        if (key) {
          problems.push(
            `read[${i}] ${read} holds a symlink ${pathShown} to ${target}, the secret of key ${
              JSON.stringify(key.name)
            }`,
          );
        } else if (!inRoots(target)) {
          problems.push(
            `read[${i}] ${read} holds a symlink ${pathShown} to ${target}, outside the read paths (deno would let the script read it): remove the link or add its target to read`,
          );
        } else if (holds) {
          problems.push(
            `read[${i}] ${read} holds a symlink ${pathShown} to ${target}, which holds the secret of key ${
              JSON.stringify(holds.name)
            }`,
          );
        }
      }
    }
  });
  return problems;
}
