/**
 * The `smtp` check: the server greets with a 220 banner and answers EHLO with 250; hc then says
 * QUIT. Nothing is sent besides EHLO and QUIT.
 *
 * @module
 */
import type { CheckKindDef, CheckResult } from "./_types.ts";
import { abortPromise, errorText, parseHost, parsePort } from "./_util.ts";

/** Most bytes of one SMTP reply hc accepts. */
export const MAX_REPLY_BYTES = 8192;

/** A complete SMTP reply: its code and its text lines. */
export interface SmtpReply {
  /** The three-digit code. */
  code: number;
  /** Text of each line, without the code. */
  lines: string[];
}

/**
 * Parses one complete SMTP reply from the start of a buffer, if complete.
 *
 * @param text What was received so far.
 * @returns The reply and how many characters it used, or `null` if incomplete.
 * @throws {SyntaxError} When a line does not start with a three-digit code.
 *
 * @example
 * ```ts
 * import { parseReply } from "./smtp.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(parseReply("250-mx\r\n250 SIZE 1000\r\n")?.reply.code, 250);
 * ```
 */
export function parseReply(text: string): { reply: SmtpReply; used: number } | null {
  const lines: string[] = [];
  let at = 0;
  while (true) {
    const eol = text.indexOf("\n", at);
    if (eol < 0) return null;
    const line = text.slice(at, eol).replace(/\r$/, "");
    at = eol + 1;
    const m = /^([2-5][0-9][0-9])([ -]?)(.*)$/.exec(line);
    if (!m) throw new SyntaxError(`not an SMTP reply: "${line.slice(0, 60)}"`);
    lines.push(m[3] ?? "");
    if (m[2] !== "-") return { reply: { code: Number(m[1]), lines }, used: at };
  }
}

/**
 * Talks to an SMTP server: banner, EHLO, QUIT.
 *
 * @param options Host, port and the EHLO name.
 * @param signal Aborts the session (the connection is closed).
 * @returns The check result.
 */
export async function probeSmtp(
  options: { host: string; port: number; helo: string },
  signal: AbortSignal,
): Promise<CheckResult> {
  const started = performance.now();
  const abort = abortPromise(signal);
  let conn: Deno.TcpConn | null = null;
  const pending = Deno.connect({ hostname: options.host, port: options.port });
  let buffer = "";
  const decoder = new TextDecoder();
  const chunk = new Uint8Array(2048);
  const readReply = async (): Promise<SmtpReply> => {
    while (true) {
      const parsed = parseReply(buffer);
      if (parsed) {
        buffer = buffer.slice(parsed.used);
        return parsed.reply;
      }
      if (buffer.length > MAX_REPLY_BYTES) {
        throw new RangeError(`reply longer than ${MAX_REPLY_BYTES} bytes`);
      }
      const n = await Promise.race([conn!.read(chunk), abort.promise]);
      if (n === null) throw new Error("connection closed by the server");
      buffer += decoder.decode(chunk.subarray(0, n), { stream: true });
    }
  };
  let stage = "connect";
  try {
    conn = await Promise.race([pending, abort.promise]);
    stage = "banner";
    const banner = await readReply();
    if (banner.code !== 220) {
      return {
        ok: false,
        detail: `banner is ${banner.code} ${banner.lines[0] ?? ""}, expected 220`,
        latencyMs: null,
      };
    }
    stage = "EHLO";
    await conn.write(new TextEncoder().encode(`EHLO ${options.helo}\r\n`));
    const ehlo = await readReply();
    const ms = performance.now() - started;
    if (ehlo.code !== 250) {
      return {
        ok: false,
        detail: `EHLO answered ${ehlo.code} ${ehlo.lines[0] ?? ""}, expected 250`,
        latencyMs: ms,
      };
    }
    await conn.write(new TextEncoder().encode("QUIT\r\n")).catch(() => 0);
    return {
      ok: true,
      detail: `220 ${banner.lines[0] ?? ""}; EHLO 250 in ${Math.round(ms)} ms`.slice(0, 200),
      latencyMs: ms,
    };
  } catch (e) {
    if (conn === null) pending.then((c) => c.close(), () => {});
    const what = signal.aborted ? "timed out" : errorText(e);
    return { ok: false, detail: `${stage} failed: ${what}`, latencyMs: null };
  } finally {
    abort.dispose();
    try {
      conn?.close();
    } catch { /* already closed */ }
  }
}

/** The `smtp` check kind: `smtp host=H [port=25] [helo=NAME]`. */
export const smtpCheck: CheckKindDef = {
  summary: "an SMTP server sends a 220 banner and answers EHLO with 250",
  options: {
    host: { help: "host name or IP address of the mail server", required: true, parse: parseHost },
    port: { help: "TCP port (default 25)", parse: parsePort },
    helo: {
      help: "the name hc sends in EHLO (default hc.invalid)",
      parse: (t) => {
        if (!/^[A-Za-z0-9.-]{1,253}$/.test(t)) {
          throw new RangeError(`"${t}" is not a host name for EHLO`);
        }
        return t;
      },
    },
  },
  takesArgv: false,
  validate: () => ({ errors: [], warnings: [] }),
  target: (v) => `${v.host}:${(v.port as number | undefined) ?? 25}`,
  create: (v) => {
    const options = {
      host: v.host as string,
      port: (v.port as number | undefined) ?? 25,
      helo: (v.helo as string | undefined) ?? "hc.invalid",
    };
    return { run: (signal) => probeSmtp(options, signal) };
  },
};
