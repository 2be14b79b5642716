/**
 * /healthz answers 200 while the process runs its loop; /readyz answers 200 only when
 * every readiness check passes (connections up, consumer not stuck in `failed`).
 * A tiny node:http server: no framework needed for two GET routes.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export type ReadinessCheck = () => { ok: boolean; detail?: string } | Promise<{ ok: boolean; detail?: string }>;

export class HealthServer {
  readonly #server: Server;
  readonly #checks = new Map<string, ReadinessCheck>();
  #live = true;
  #closed: Promise<void> | undefined;

  private constructor(server: Server) {
    this.#server = server;
  }

  static async create(options: { port: number; host?: string }): Promise<HealthServer> {
    let health: HealthServer | undefined;
    const server = createServer((request, response) => {
      void health?.handle(request.url ?? '/').then(({ status, body }) => {
        response.writeHead(status, { 'content-type': 'application/json' });
        response.end(JSON.stringify(body));
      });
    });
    health = new HealthServer(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port, options.host ?? '0.0.0.0', () => {
        server.off('error', reject);
        resolve();
      });
    });
    return health;
  }

  get port(): number {
    return (this.#server.address() as AddressInfo).port;
  }

  addCheck(name: string, check: ReadinessCheck): void {
    this.#checks.set(name, check);
  }

  setLive(live: boolean): void {
    this.#live = live;
  }

  private async handle(url: string): Promise<{ status: number; body: unknown }> {
    const path = url.split('?')[0];
    if (path === '/healthz') return { status: this.#live ? 200 : 503, body: { live: this.#live } };
    if (path === '/readyz') {
      const results: Record<string, { ok: boolean; detail?: string }> = {};
      let ready = true;
      for (const [name, check] of this.#checks) {
        try {
          results[name] = await check();
        } catch (error) {
          results[name] = { ok: false, detail: error instanceof Error ? error.message : String(error) };
        }
        if (!results[name]?.ok) ready = false;
      }
      return { status: ready ? 200 : 503, body: { ready, checks: results } };
    }
    return { status: 404, body: { error: 'not found' } };
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
