/**
 * tmux for terminal UI tests: each {@linkcode Tmux} runs its own server on a unique socket name,
 * every command has a time limit, and {@linkcode Tmux.kill} ends the server.
 *
 * @module
 */

import { needs } from "./_programs.ts";

/** Why the terminal UI tests are skipped (naming the package), or `""` when tmux is there. */
export const NO_TMUX: string = needs({ programs: ["tmux"] });

/** Whether tmux is installed. */
export const HAVE_TMUX: boolean = NO_TMUX === "";
let sessions = 0;

/** A tmux server of its own (unique socket name), killed by {@linkcode Tmux.kill}. */
export class Tmux {
  readonly socket = `failmon-test-${Deno.pid}-${++sessions}`;

  /** Runs a tmux command with a time limit and returns its stdout. */
  async run(...args: string[]): Promise<string> {
    const child = new Deno.Command("tmux", {
      args: ["-L", this.socket, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    try {
      const out = await child.output();
      if (!out.success) {
        throw new Error(`tmux ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
      }
      return new TextDecoder().decode(out.stdout);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Starts a 120x40 session running a shell command. */
  async start(command: string, size = { x: 120, y: 40 }): Promise<void> {
    await this.run(
      "new-session",
      "-d",
      "-x",
      String(size.x),
      "-y",
      String(size.y),
      "-s",
      "t",
      command,
    );
  }

  /** The visible screen as text (`escapes`: with colour escapes). */
  screen(escapes = false): Promise<string> {
    return this.run("capture-pane", "-p", ...(escapes ? ["-e"] : []), "-t", "t");
  }

  /** Types keys (tmux key names such as `Down`, `Tab`, `q`). */
  async keys(...keys: string[]): Promise<void> {
    await this.run("send-keys", "-t", "t", ...keys);
  }

  /** Waits (at most 15 s) until the screen matches; returns it. */
  async waitFor(pattern: RegExp, what = String(pattern)): Promise<string> {
    const deadline = Date.now() + 15_000;
    let text = "";
    while (Date.now() < deadline) {
      text = await this.screen();
      if (pattern.test(text)) return text;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`Timed out waiting for ${what}; the screen was:\n${text}`);
  }

  /** Kills the server (and the programs in it). */
  async kill(): Promise<void> {
    await this.run("kill-server").catch(() => {});
  }
}
