/**
 * The community a tool signs with: `--key`, `--key-file` or `$FAILOVER_KEY`.
 *
 * @module
 */

/** Options of {@linkcode resolveKey}. */
export interface ResolveKeyOptions {
  /** A key given on the command line; wins over everything else. */
  key?: string;
  /** A file holding the key (first line, surrounding whitespace removed). */
  keyFile?: string;
  /** Name of the environment variable to read (default `FAILOVER_KEY`). */
  env?: string;
}

/**
 * Finds the key a CLI should sign with: the `--key` flag, else the `--key-file` file, else the
 * environment variable (`FAILOVER_KEY` by default; reading it needs `--allow-env`).
 *
 * @param options Flag value, key file and environment variable name.
 * @returns The key, or `undefined` when none was given (requests then go unsigned).
 * @throws {TypeError} When the key file cannot be read, is empty or is larger than 4 KiB.
 *
 * @example
 * ```ts
 * import { resolveKey } from "./key.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(resolveKey({ key: "s3cret" }), "s3cret");
 * ```
 */
export function resolveKey(options: ResolveKeyOptions): string | undefined {
  if (options.key !== undefined) {
    if (options.key === "") throw new TypeError("Invalid key: the --key value is empty");
    return options.key;
  }
  if (options.keyFile !== undefined) {
    let text: string;
    try {
      const info = Deno.statSync(options.keyFile);
      if (info.size > 4096) {
        throw new TypeError(`Invalid key file ${options.keyFile}: larger than 4 KiB`);
      }
      text = Deno.readTextFileSync(options.keyFile);
    } catch (error) {
      if (error instanceof TypeError) throw error;
      throw new TypeError(
        `Cannot read key file ${options.keyFile}: ${(error as Error).message}`,
        { cause: error },
      );
    }
    const key = (text.split("\n")[0] ?? "").trim();
    if (key === "") throw new TypeError(`Invalid key file ${options.keyFile}: first line is empty`);
    return key;
  }
  const name = options.env ?? "FAILOVER_KEY";
  let value: string | undefined;
  try {
    value = Deno.env.get(name);
  } catch {
    return undefined;
  }
  return value === undefined || value === "" ? undefined : value;
}
