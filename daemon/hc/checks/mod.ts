/**
 * The check kinds of hc, by name.
 *
 * @module
 */
import type { CheckKind, CheckKindDef } from "./_types.ts";
import { commandCheck } from "./command.ts";
import { dnsCheck } from "./dns.ts";
import { httpCheck, httpsCheck } from "./http.ts";
import { pingCheck } from "./ping.ts";
import { smtpCheck } from "./smtp.ts";
import { tcpCheck } from "./tcp.ts";

export type {
  CheckContext,
  CheckInstance,
  CheckKind,
  CheckKindDef,
  CheckResult,
  CheckRunner,
  OptionDef,
} from "./_types.ts";
export { CHECK_KINDS } from "./_types.ts";

/** Every check kind's definition. */
export const CHECKS: Readonly<Record<CheckKind, CheckKindDef>> = {
  tcp: tcpCheck,
  http: httpCheck,
  https: httpsCheck,
  dns: dnsCheck,
  smtp: smtpCheck,
  command: commandCheck,
  ping: pingCheck,
};
