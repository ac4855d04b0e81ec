/**
 * The `http` and `https` checks: a request answers with an expected status, optionally a body
 * matching a regex, optionally within a latency threshold. `https` may trust a private CA.
 *
 * @module
 */
import type { CheckContext, CheckKindDef, CheckResult } from "./_types.ts";
import { parseDuration } from "../../../lib/types.ts";
import { readBounded } from "../../../lib/streams.ts";
import { errorText, HC_DURATION, parseRegex, resolvePath } from "./_util.ts";
import { Http1Client } from "./_http1.ts";

/** Most body bytes read to match `body=` (the rest is discarded). */
export const MAX_BODY_BYTES = 1 << 20;

/** An accepted status: one code or a class such as `2xx`. */
export type StatusMatcher = (status: number) => boolean;

/**
 * Parses `status=`: codes and classes separated by commas, e.g. `200`, `200,204`, `2xx,301`.
 *
 * @param text The option value.
 * @returns A matcher.
 * @throws {RangeError} When an item is not a code 100-599 or a class 1xx-5xx.
 *
 * @example
 * ```ts
 * import { parseStatus } from "./http.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(parseStatus("2xx,301")(204), true);
 * ```
 */
export function parseStatus(text: string): StatusMatcher {
  const items = text.split(",");
  const codes = new Set<number>();
  const classes = new Set<number>();
  for (const item of items) {
    if (/^[1-5]xx$/.test(item)) classes.add(Number(item[0]));
    else if (/^[1-5][0-9][0-9]$/.test(item)) codes.add(Number(item));
    else {
      throw new RangeError(
        `"${item}" is not a status: use codes 100-599 or classes 1xx-5xx, separated by commas`,
      );
    }
  }
  return (s) => codes.has(s) || classes.has(Math.floor(s / 100));
}

interface HttpOptions {
  url: URL;
  status: StatusMatcher;
  statusText: string;
  body: RegExp | null;
  maxLatencyMs: number | null;
  method: string;
  client: Deno.HttpClient | null;
  /** For `http://`: the check's own HTTP/1.1 connection (fetch() is used for `https://`). */
  http1: Http1Client | null;
}

/** The user-agent header of every probe. */
const USER_AGENT = "failover-hc/0.6";

/**
 * Asks over the check's own HTTP/1.1 connection (`http://`).
 *
 * @returns The status and the body's first bytes, or a failed result.
 */
async function askHttp1(
  client: Http1Client,
  wantBody: boolean,
  signal: AbortSignal,
): Promise<{ status: number; text: string } | CheckResult> {
  try {
    const answer = await client.request(signal, wantBody ? MAX_BODY_BYTES : 0);
    const text = answer.body ? new TextDecoder().decode(answer.body) : "";
    return { status: answer.status, text };
  } catch (e) {
    if (signal.aborted) return { ok: false, detail: "no answer: timed out", latencyMs: null };
    return { ok: false, detail: `request failed: ${errorText(e)}`, latencyMs: null };
  }
}

/**
 * Asks with fetch() (`https://`, with the check's own client when it trusts a private CA).
 *
 * @returns The status and the body's first bytes, or a failed result.
 */
async function askFetch(
  options: HttpOptions,
  signal: AbortSignal,
): Promise<{ status: number; text: string } | CheckResult> {
  let response: Response;
  try {
    const init: RequestInit & { client?: Deno.HttpClient } = {
      method: options.method,
      signal,
      redirect: "manual",
      headers: { "user-agent": USER_AGENT },
    };
    if (options.client) init.client = options.client;
    response = await fetch(options.url, init);
  } catch (e) {
    if (signal.aborted) return { ok: false, detail: "no answer: timed out", latencyMs: null };
    return { ok: false, detail: `request failed: ${errorText(e)}`, latencyMs: null };
  }
  let text = "";
  try {
    if (options.body) {
      const { bytes } = await readBounded(response.body, MAX_BODY_BYTES);
      text = new TextDecoder().decode(bytes);
    } else {
      await response.body?.cancel();
    }
  } catch (e) {
    return {
      ok: false,
      detail: `HTTP ${response.status}, body unreadable: ${
        signal.aborted ? "timed out" : errorText(e)
      }`,
      latencyMs: null,
    };
  }
  return { status: response.status, text };
}

/**
 * Runs one HTTP(S) probe.
 *
 * @param options What to ask and expect.
 * @param signal Aborts the request.
 * @returns The result.
 */
async function probeHttp(options: HttpOptions, signal: AbortSignal): Promise<CheckResult> {
  const started = performance.now();
  const answer = options.http1
    ? await askHttp1(options.http1, options.body !== null, signal)
    : await askFetch(options, signal);
  if ("ok" in answer) return answer;
  const { status, text } = answer;
  const ms = performance.now() - started;
  const head = `HTTP ${status} in ${Math.round(ms)} ms`;
  if (!options.status(status)) {
    return { ok: false, detail: `${head}: status is not ${options.statusText}`, latencyMs: ms };
  }
  if (options.body && !options.body.test(text)) {
    return { ok: false, detail: `${head}: body does not match ${options.body}`, latencyMs: ms };
  }
  if (options.maxLatencyMs !== null && ms > options.maxLatencyMs) {
    return {
      ok: false,
      detail: `${head}: slower than max-latency ${options.maxLatencyMs} ms`,
      latencyMs: ms,
    };
  }
  return { ok: true, detail: head, latencyMs: ms };
}

function makeHttpKind(scheme: "http" | "https"): CheckKindDef {
  const options: CheckKindDef["options"] = {
    url: {
      help: `${scheme}:// URL to request`,
      required: true,
      parse: (t) => {
        let u: URL;
        try {
          u = new URL(t);
        } catch {
          throw new RangeError(`"${t}" is not a URL: write it as ${scheme}://host:port/path`);
        }
        if (u.protocol !== `${scheme}:`) {
          throw new RangeError(
            `"${t}" is not an ${scheme}:// URL: use the ${
              u.protocol === "https:" ? "https" : "http"
            } check kind for it`,
          );
        }
        return u;
      },
    },
    status: {
      help: "accepted status codes or classes, e.g. 200, 200,204 or 2xx (default 200)",
      parse: (t) => {
        parseStatus(t);
        return t;
      },
    },
    body: { help: "regex the body must match, as /pattern/ or /pattern/i", parse: parseRegex },
    "max-latency": {
      help: "fail when the full answer takes longer, e.g. 300ms",
      parse: (t) => parseDuration(t, HC_DURATION),
    },
    method: {
      help: "GET (default) or HEAD",
      parse: (t) => {
        if (t !== "GET" && t !== "HEAD") throw new RangeError(`"${t}" is not GET or HEAD`);
        return t;
      },
    },
  };
  if (scheme === "https") {
    options["ca-file"] = {
      help: "PEM file of a CA to trust besides the system's, relative to the Hcfile",
    };
  }
  return {
    summary: scheme === "http"
      ? "an HTTP request answers with the expected status, body and latency"
      : "as http, over TLS, optionally trusting a private CA (ca-file=)",
    options,
    takesArgv: false,
    validate(v, _argv, context: CheckContext) {
      const errors: string[] = [];
      const warnings: string[] = [];
      if (v.method === "HEAD" && v.body !== undefined) {
        errors.push("body= cannot be matched with method=HEAD: a HEAD answer has no body");
      }
      if (typeof v["max-latency"] === "number" && v["max-latency"] >= context.timeoutMs) {
        warnings.push(
          `max-latency=${
            v["max-latency"]
          }ms is not below timeout=${context.timeoutMs}ms: it can never fail the check on its own`,
        );
      }
      if (typeof v["ca-file"] === "string") {
        const path = resolvePath(context.baseDir, v["ca-file"]);
        try {
          const text = Deno.readTextFileSync(path);
          if (!text.includes("-----BEGIN CERTIFICATE-----")) {
            errors.push(`ca-file ${path} holds no PEM certificate`);
          }
        } catch (e) {
          errors.push(`ca-file ${path} cannot be read: ${errorText(e)}`);
        }
      }
      return { errors, warnings };
    },
    target: (v) => String(v.url),
    create(v, _argv, context) {
      let client: Deno.HttpClient | null = null;
      if (typeof v["ca-file"] === "string") {
        const pem = Deno.readTextFileSync(resolvePath(context.baseDir, v["ca-file"]));
        client = Deno.createHttpClient({ caCerts: [pem] });
      }
      const statusText = typeof v.status === "string" ? v.status : "200";
      const options: HttpOptions = {
        url: v.url as URL,
        status: parseStatus(statusText),
        statusText,
        body: (v.body as RegExp | undefined) ?? null,
        maxLatencyMs: (v["max-latency"] as number | undefined) ?? null,
        method: (v.method as string | undefined) ?? "GET",
        client,
        http1: null,
      };
      if (scheme === "http") {
        options.http1 = new Http1Client(options.url, {
          method: options.method,
          headers: { "user-agent": USER_AGENT },
        });
      }
      return {
        run: (signal) => probeHttp(options, signal),
        close: () => {
          client?.close();
          options.http1?.close();
        },
      };
    },
  };
}

/** The `http` check kind. */
export const httpCheck: CheckKindDef = makeHttpKind("http");

/** The `https` check kind. */
export const httpsCheck: CheckKindDef = makeHttpKind("https");
