/**
 * A redis-server of a test's own, on a free loopback port, without persistence: for tests
 * that stop, kill or pause Redis (the shared one must stay up for every other test), and
 * for measurements that need a server no other client touches (INFO deltas).
 *
 *   const redis = await ScratchRedis.start(ctx);  // redis.url → redis://127.0.0.1:<port>
 *   await redis.kill(); await redis.start();      // a restart on the same port, empty
 *   redis.pause(); redis.resume();                // SIGSTOP / SIGCONT
 */
import { spawnSync } from 'node:child_process';
import { ManagedProcess, type TestContext } from '../harness/index.ts';
import { freePort } from '../harness/ports.ts';

/** Whether redis-server is on PATH (a local-servers run); otherwise tests needing it skip. */
export function scratchRedisAvailable(): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
}


export class ScratchRedis {
  readonly port: number;
  #process: ManagedProcess | undefined;
  #starts = 0;

  private constructor(port: number) {
    this.port = port;
  }

  static async start(ctx: TestContext): Promise<ScratchRedis> {
    const redis = new ScratchRedis(await freePort());
    ctx.defer('scratch redis', async () => {
      redis.resume();
      await redis.#process?.stop(5_000);
    });
    await redis.start();
    return redis;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.#process?.pid;
  }

  /** Starts (or restarts, empty) on the same port; resolves when it accepts connections. */
  async start(): Promise<void> {
    this.#starts += 1;
    this.#process = ManagedProcess.spawn({
      name: `scratch-redis-${this.#starts}`,
      command: 'redis-server',
      args: ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'notice'],
    });
    await this.#process.waitForLine(/Ready to accept connections/, 15_000);
  }

  /** SIGKILL: a crash; claims are gone with it (no persistence, PITFALLS 15). */
  async kill(): Promise<void> {
    this.#process?.kill('SIGKILL');
    await this.#process?.waitForExit(10_000);
    this.#process = undefined;
  }

  /** SIGSTOP: the server keeps its sockets and answers nothing until resume(). */
  pause(): void {
    this.#process?.kill('SIGSTOP');
  }

  resume(): void {
    this.#process?.kill('SIGCONT');
  }
}
