/**
 * The command line of a benchmark: parse the options (a usage error exits 2), print the help, run.
 *
 * @module
 */

/**
 * Parses `args` with `parse` (which returns `null` for `--help`) and runs the benchmark.
 *
 * @param args The arguments.
 * @param parse The options parser; throws on bad input, returns `null` for `--help`.
 * @param help The help text.
 * @param run The benchmark; returns the exit code.
 * @returns The exit code: `run`'s, 0 after the help, 2 on a usage error.
 */
export async function runBenchCli<O>(
  args: string[],
  parse: (args: string[]) => O | null,
  help: string,
  run: (options: O) => Promise<number>,
): Promise<number> {
  let o: O | null;
  try {
    o = parse(args);
  } catch (error) {
    console.error((error as Error).message);
    return 2;
  }
  if (o === null) {
    console.log(help);
    return 0;
  }
  return await run(o);
}
