/**
 * /healthz answers 200 while the process runs its loop; /readyz answers 200 only when
 * every readiness check passes (connections up, consumer not stuck in `failed`);
 * /metrics serves the process's Prometheus registry (./metrics.ts), when it has one.
 * A tiny node:http server: no framework needed for three GET routes.
 *
 * It listens on `host` (HEALTH_HOST; default 127.0.0.1: loopback only — compose and
 * Kubernetes set 0.0.0.0 so probes and Prometheus reach it). /readyz is meant for probes
 * anyone on that network can call, so it says only each check's name, `ok` and a short
 * reason code (`reconnecting`, `retrying:SINK_SCHEMA_HELD`): never an error's text,
 * which can name hosts, tables, keys or values. A check that throws answers
 * `{ ok: false, detail: 'check failed' }` and its error is logged; a detail that is not a
 * reason code is replaced by `unavailable` (not ok) or dropped (ok) and logged at debug.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';

export interface Readiness {
  readonly ok: boolean;
  /** A reason code: letters, digits and `_ . : / -`, at most 64 characters (see REASON_CODE). */
  readonly detail?: string;
}

export type ReadinessCheck = () => Readiness | Promise<Readiness>;

/** What /readyz may say about a check: one word-like code, no spaces, no prose. */
export const REASON_CODE = /^[A-Za-z0-9_.:/-]{1,64}$/;

/** Loopback unless HEALTH_HOST says otherwise. */
export const DEFAULT_HEALTH_HOST = '127.0.0.1';

export interface HealthServerOptions {
  readonly port: number;
  /** Default DEFAULT_HEALTH_HOST (loopback). */
  readonly host?: string | undefined;
  /** Served on GET /metrics; without it /metrics is 404. */
  readonly metrics?: Metrics | undefined;
  /** Where a failing check's real error goes. */
  readonly logger?: Logger | undefined;
}

export class HealthServer {
  readonly #server: Server;
  readonly #checks = new Map<string, ReadinessCheck>();
  readonly #options: HealthServerOptions;
  /** Last error text logged per check: a probe every few seconds logs a failure once, not at every call. */
  readonly #logged = new Map<string, string>();
  #live = true;
  #closed: Promise<void> | undefined;

  private constructor(server: Server, options: HealthServerOptions) {
    this.#server = server;
    this.#options = options;
  }

  static async create(options: HealthServerOptions): Promise<HealthServer> {
    let health: HealthServer | undefined;
    const server = createServer((request, response) => {
      void health?.handle(request.method ?? 'GET', request.url ?? '/').then(
        ({ status, body, contentType }) => {
          response.writeHead(status, { 'content-type': contentType ?? 'application/json' });
          response.end(typeof body === 'string' ? body : JSON.stringify(body));
        },
        () => {
          response.writeHead(500, { 'content-type': 'application/json' });
          response.end(JSON.stringify({ error: 'internal error' }));
        },
      );
    });
    health = new HealthServer(server, options);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port, options.host ?? DEFAULT_HEALTH_HOST, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return health;
  }

  get port(): number {
    return (this.#server.address() as AddressInfo).port;
  }

  get host(): string {
    return (this.#server.address() as AddressInfo).address;
  }

  addCheck(name: string, check: ReadinessCheck): void {
    this.#checks.set(name, check);
  }

  setLive(live: boolean): void {
    this.#live = live;
  }

  private async handle(method: string, url: string): Promise<{ status: number; body: unknown; contentType?: string }> {
    const path = url.split('?')[0];
    if (method !== 'GET' && method !== 'HEAD') return { status: 405, body: { error: 'method not allowed' } };
    if (path === '/healthz') return { status: this.#live ? 200 : 503, body: { live: this.#live } };
    if (path === '/readyz') {
      const results: Record<string, Readiness> = {};
      let ready = true;
      for (const [name, check] of this.#checks) {
        const result = await this.#run(name, check);
        results[name] = result;
        if (!result.ok) ready = false;
      }
      return { status: ready ? 200 : 503, body: { ready, checks: results } };
    }
    if (path === '/metrics' && this.#options.metrics) {
      const { contentType, body } = await this.#options.metrics.scrape();
      return { status: 200, body, contentType };
    }
    return { status: 404, body: { error: 'not found' } };
  }

  async #run(name: string, check: ReadinessCheck): Promise<Readiness> {
    let result: Readiness;
    try {
      result = await check();
    } catch (error) {
      this.#logOnce(name, 'warn', error instanceof Error ? error.message : String(error), error, 'readiness check failed');
      return { ok: false, detail: 'check failed' };
    }
    const ok = result.ok === true;
    if (result.detail !== undefined && !REASON_CODE.test(result.detail)) {
      if (ok) {
        this.#logged.delete(name);
        return { ok };
      }
      this.#logOnce(name, 'debug', result.detail, undefined, 'readiness detail is not a reason code: not shown');
      return { ok: false, detail: 'unavailable' };
    }
    this.#logged.delete(name);
    return result.detail === undefined ? { ok } : { ok, detail: result.detail };
  }

  #logOnce(name: string, level: 'warn' | 'debug', text: string, error: unknown, msg: string): void {
    if (this.#logged.get(name) === text) return;
    this.#logged.set(name, text);
    this.#options.logger?.[level]({ check: name, ...(error === undefined ? { detail: text } : { err: error }) }, msg);
  }

  close(): Promise<void> {
    this.#closed ??= new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
    return this.#closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
