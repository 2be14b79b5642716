/**
 * `cdc run`: the apps of a pipeline file as supervised child processes on this machine.
 *
 * One app's states:
 *
 *   starting ──(its /healthz answers)──► running ──(exits)──► backoff ──(delay)──► starting
 *       └──────────(exits)──────────────────────────────────────┘
 *   any ──stop()──► stopping ──(exited, or SIGKILL after stopTimeoutMs)──► stopped
 *
 * Started downstream first (committers, dedup gate, reorderers, readers), each waited for
 * (bounded) so consumers exist before the reader publishes; stopped upstream first, each
 * rank drained (SIGTERM) before the next, so what the reader published is committed. A
 * crashed app is started again after a back-off (Backoff from @cdc/core: 0.5 s doubling to
 * 30 s, reset after a minute up). Each app's output goes to `<logDir>/<name>.log`; its
 * error-level lines (pino level ≥ 50) are echoed with its name, every line with `echo`.
 */
import { Backoff } from '@cdc/core';
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { PlannedApp } from './plan.ts';

export type AppState = 'starting' | 'running' | 'backoff' | 'stopping' | 'stopped';

export interface AppStatus {
  readonly name: string;
  readonly state: AppState;
  readonly pid: number | undefined;
  readonly restarts: number;
  readonly port: number;
}

export interface SupervisorOptions {
  readonly apps: readonly PlannedApp[];
  /** The bundle (apps/<app>/dist/main.js) of an app. */
  readonly bundle: (app: PlannedApp) => string;
  readonly logDir: string;
  /** Human output: one line at a time. */
  readonly out: (line: string) => void;
  readonly echo?: boolean;
  readonly env?: NodeJS.ProcessEnv;
  readonly startTimeoutMs?: number;
  readonly stopTimeoutMs?: number;
  readonly backoff?: { readonly initialDelayMs: number; readonly maxDelayMs: number; readonly resetAfterMs: number };
}

const DEFAULT_BACKOFF = { initialDelayMs: 500, maxDelayMs: 30_000, resetAfterMs: 60_000 };

class Supervised {
  state: AppState = 'stopped';
  child: ChildProcess | undefined;
  restarts = 0;
  startedAt = 0;
  timer: NodeJS.Timeout | undefined;
  exited: Promise<void> = Promise.resolve();
  readonly backoff: Backoff;
  readonly log: WriteStream;

  constructor(
    readonly app: PlannedApp,
    logDir: string,
    policy: { initialDelayMs: number; maxDelayMs: number },
  ) {
    this.backoff = new Backoff(policy);
    this.log = createWriteStream(join(logDir, `${app.name.replace(/[^A-Za-z0-9_.-]/g, '_')}.log`), { flags: 'a' });
  }
}

export class Supervisor {
  readonly #options: SupervisorOptions;
  readonly #apps: Supervised[];
  readonly #policy: { initialDelayMs: number; maxDelayMs: number; resetAfterMs: number };
  #stopping: Promise<void> | undefined;

  private constructor(options: SupervisorOptions) {
    this.#options = options;
    this.#policy = options.backoff ?? DEFAULT_BACKOFF;
    mkdirSync(options.logDir, { recursive: true });
    this.#apps = options.apps.map((app) => new Supervised(app, options.logDir, this.#policy));
  }

  /** Starts every app, downstream first, each waited for until its /healthz answers (bounded). */
  static async start(options: SupervisorOptions): Promise<Supervisor> {
    const supervisor = new Supervisor(options);
    // Should `cdc run` itself end without stop() (an uncaught error), its apps go with it.
    process.once('exit', () => {
      for (const app of supervisor.#apps) app.child?.kill('SIGKILL');
    });
    const byRank = [...supervisor.#apps].sort((a, b) => b.app.rank - a.app.rank);
    for (const app of byRank) {
      if (supervisor.#stopping) break;
      supervisor.#spawn(app);
      await supervisor.#waitLive(app, options.startTimeoutMs ?? 60_000);
    }
    return supervisor;
  }

  status(): AppStatus[] {
    return this.#apps.map((a) => ({ name: a.app.name, state: a.state, pid: a.child?.pid, restarts: a.restarts, port: a.app.port }));
  }

  #spawn(supervised: Supervised): void {
    const { app } = supervised;
    supervised.state = 'starting';
    supervised.startedAt = Date.now();
    const child = spawn(process.execPath, ['--enable-source-maps', this.#options.bundle(app)], {
      env: { ...(this.#options.env ?? process.env), ...app.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: a Ctrl-C in the terminal (SIGINT to the foreground group)
      // reaches `cdc run` only, which then drains the apps upstream first.
      detached: true,
    });
    supervised.child = child;
    this.#options.out(`${app.name}: started (pid ${child.pid ?? '?'}, health ${app.host}:${app.port})`);
    for (const [stream, fromStderr] of [[child.stdout, false], [child.stderr, true]] as const) {
      if (!stream) continue;
      const lines = createInterface({ input: stream });
      // pino writes JSON to stdout; stderr holds what node itself says (a crash's stack): shown.
      lines.on('line', (line) => {
        supervised.log.write(`${line}\n`);
        if (this.#options.echo || fromStderr || isError(line)) this.#options.out(`${app.name} | ${line}`);
      });
    }
    supervised.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        supervised.child = undefined;
        resolve();
        if (supervised.state === 'stopping' || this.#stopping) {
          supervised.state = 'stopped';
          return;
        }
        if (Date.now() - supervised.startedAt > this.#policy.resetAfterMs) supervised.backoff.reset();
        const delay = supervised.backoff.next();
        supervised.state = 'backoff';
        this.#options.out(`${app.name}: exited (${signal ?? `code ${code}`}); restarting in ${(delay / 1000).toFixed(1)} s`);
        supervised.timer = setTimeout(() => {
          supervised.timer = undefined;
          if (this.#stopping) return;
          supervised.restarts += 1;
          this.#spawn(supervised);
          void this.#waitLive(supervised, this.#options.startTimeoutMs ?? 60_000);
        }, delay);
      });
    });
  }

  /** Until the app's /healthz answers 200, it exits, or `timeoutMs` passes. */
  async #waitLive(supervised: Supervised, timeoutMs: number): Promise<void> {
    const child = supervised.child;
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline && supervised.child === child && child && !this.#stopping) {
      const ok = await fetch(`http://${supervised.app.host}:${supervised.app.port}/healthz`, { signal: AbortSignal.timeout(1_000) }).then(
        (response) => response.ok,
        () => false,
      );
      if (ok) {
        if (supervised.state === 'starting') supervised.state = 'running';
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  /** SIGTERM upstream first, a rank at a time, each drained or SIGKILLed after stopTimeoutMs; idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      const ranks = [...new Set(this.#apps.map((a) => a.app.rank))].sort((a, b) => a - b);
      for (const rank of ranks) {
        await Promise.all(
          this.#apps
            .filter((a) => a.app.rank === rank)
            .map(async (supervised) => {
              if (supervised.timer) clearTimeout(supervised.timer);
              const child = supervised.child;
              if (!child) {
                supervised.state = 'stopped';
                return;
              }
              supervised.state = 'stopping';
              child.kill('SIGTERM');
              const killer = setTimeout(() => child.kill('SIGKILL'), this.#options.stopTimeoutMs ?? 20_000);
              await supervised.exited;
              clearTimeout(killer);
              this.#options.out(`${supervised.app.name}: stopped`);
            }),
        );
      }
      await Promise.all(this.#apps.map((a) => new Promise<void>((resolve) => a.log.end(resolve))));
    })();
    return this.#stopping;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

function isError(line: string): boolean {
  if (!line.startsWith('{')) return false;
  try {
    const level = (JSON.parse(line) as { level?: unknown }).level;
    return typeof level === 'number' && level >= 50;
  } catch {
    return false;
  }
}
