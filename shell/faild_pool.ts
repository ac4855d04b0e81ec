/**
 * The faild clients failsh pools: one {@linkcode FaildClient} per host of the script (this host's
 * is the local faild of the policy), each signing with the policy key the host names, the keys
 * read once when the pool opens. The scheduler polls the peers through it, a handler's
 * `ctx.poll()` goes through the same client (the sandbox's injected poller), and
 * `ctx.setState()` sets the local faild through the local one: one connection pool and one
 * nonce session per peer, whoever asks.
 *
 * @module
 */
import type { HostDecl, Policy, ScriptDecl } from "./contract.ts";
import type { ServiceState } from "../lib/types.ts";
import type { PeerPoll } from "./rpc.ts";
import { FaildClient } from "../lib/client.ts";
import { readKey } from "./sandbox/policy.ts";

/**
 * The faild URL of a declared host.
 *
 * @param host The host as the script declares it.
 * @returns `protocol://address:port`, an IPv6 address in brackets.
 *
 * @example
 * ```ts
 * import { faildUrl } from "./faild_pool.ts";
 * import { equal } from "node:assert/strict";
 * equal(faildUrl({ name: "b", address: "::1", port: 7100, protocol: "http", key: null }), "http://[::1]:7100");
 * ```
 */
export function faildUrl(host: HostDecl): string {
  const address = host.address.includes(":") ? `[${host.address}]` : host.address;
  return `${host.protocol}://${address}:${host.port}`;
}

/** One faild client per host of a script, for everything failsh asks a faild. */
export class FaildPool {
  /** The local faild's client (the policy's `faild`). */
  readonly local: FaildClient;
  #clients: Map<string, FaildClient>;

  private constructor(local: FaildClient, clients: Map<string, FaildClient>) {
    this.local = local;
    this.#clients = clients;
  }

  /**
   * Opens the pool: reads the keys and creates the clients (nothing is sent yet).
   *
   * @param policy The policy: this host's name, the local faild and the keys.
   * @param decl The script's declaration: its hosts.
   * @returns The pool.
   * @throws {Error} When a key named by the policy or a host cannot be read.
   *
   * @example
   * ```ts ignore
   * import { FaildPool } from "./faild_pool.ts";
   * const pool = await FaildPool.open(policy, decl);
   * const beta = await pool.peerPoll(decl.hosts[1]!, { signal: AbortSignal.timeout(1000) });
   * pool.close();
   * ```
   */
  static async open(policy: Policy, decl: ScriptDecl): Promise<FaildPool> {
    const clients = new Map<string, FaildClient>();
    const opened: FaildClient[] = [];
    try {
      const localKey = await readKey(policy, policy.faild.key);
      const local = new FaildClient(policy.faild.url, localKey === null ? {} : { key: localKey });
      opened.push(local);
      for (const h of decl.hosts) {
        if (h.name === policy.host) {
          clients.set(h.name, local);
          continue;
        }
        const key = await readKey(policy, h.key);
        const client = new FaildClient(faildUrl(h), key === null ? {} : { key });
        opened.push(client);
        clients.set(h.name, client);
      }
      return new FaildPool(local, clients);
    } catch (error) {
      for (const c of opened) c.close();
      throw error;
    }
  }

  /**
   * The client of a host.
   *
   * @param host The host's name.
   * @returns Its client.
   * @throws {Error} When the script declares no such host.
   */
  client(host: string): FaildClient {
    const client = this.#clients.get(host);
    if (!client) throw new Error(`Cannot poll ${host}: the script declares no such host`);
    return client;
  }

  /**
   * Polls a host for a handler's `ctx.poll()`: an unreachable host is a result, not an error.
   *
   * @param host The host.
   * @param options Aborts the poll.
   * @returns Its services, reachability and latency.
   */
  async peerPoll(host: HostDecl, options: { signal: AbortSignal }): Promise<PeerPoll> {
    const started = performance.now();
    try {
      const list = await this.client(host.name).list({ signal: options.signal });
      return {
        host: host.name,
        reachable: true,
        services: list.services,
        latencyMs: Math.round((performance.now() - started) * 10) / 10,
        error: null,
      };
    } catch (e) {
      return {
        host: host.name,
        reachable: false,
        services: [],
        latencyMs: null,
        error: e instanceof Error ? e.message : String(e),
      };
    }
  }

  /**
   * Sets a service's state on the local faild (a handler's `ctx.setState()`).
   *
   * @param service The service.
   * @param state The state.
   * @param detail Free text.
   */
  async setState(service: string, state: ServiceState, detail: string): Promise<void> {
    await this.local.set(service, state, { detail });
  }

  /** Closes every client. */
  close(): void {
    for (const c of new Set([...this.#clients.values(), this.local])) c.close();
  }
}
