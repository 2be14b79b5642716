/**
 * Fault helpers: a child process a test can watch, kill and restart.
 *
 *   const app = ctx.spawnApp('apps/reader/src/main.ts', { env: { PIPELINE: name } });
 *   await app.waitForLine(/"msg":"streaming"/, 20_000);
 *   app.kill('SIGKILL');                 // crash it
 *   await app.waitForExit(5_000);
 *
 * Each process runs in its own process group (detached) so a signal reaches whatever it
 * spawned too; every process still alive when the test context closes, or when the test
 * worker exits, is killed. Output is kept line by line in bounded buffers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { REPO_ROOT } from './servers.ts';
import { WaitTimeoutError } from './wait.ts';

export interface ProcessOptions {
  /** Label for errors and echoed output; default: the command's base name. */
  readonly name?: string;
  readonly command: string;
  readonly args?: readonly string[];
  /** Merged over this process's environment; `undefined` removes a variable. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  readonly cwd?: string;
  /** Lines kept per stream (oldest dropped first); default 10 000. */
  readonly maxLines?: number;
  /** Copy every line to this process's stderr, prefixed; default: env CDC_TEST_ECHO=1. */
  readonly echo?: boolean;
}

export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface LineMatch {
  readonly line: string;
  /** Absolute index of the line in the stream (0 = first line ever printed). */
  readonly index: number;
  readonly match: RegExpExecArray;
}

type StreamName = 'stdout' | 'stderr';

/**
 * Every live process group, killed when the test worker exits so no test leaves orphans.
 * Kept on globalThis: vitest may evaluate this module once per test file in one worker,
 * and the exit hook must be registered once.
 */
const LIVE = Symbol.for('cdc.tests.harness.liveProcesses');
const registry = globalThis as typeof globalThis & { [LIVE]?: Set<ManagedProcess> };
const live: Set<ManagedProcess> = (registry[LIVE] ??= (() => {
  const set = new Set<ManagedProcess>();
  const killAll = (): void => {
    for (const child of set) child.kill('SIGKILL');
  };
  process.once('exit', killAll);
  // A runner stopped by a signal never reaches 'exit': without this its apps (detached
  // process groups) would outlive it, and an orphaned reader's walsender keeps
  // PostgreSQL from shutting down. Kill them, then let the signal take its course.
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.once(signal, () => {
      killAll();
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    });
  }
  return set;
})());

class LineBuffer {
  readonly #lines: string[] = [];
  #dropped = 0;
  readonly #waiters = new Set<() => void>();

  constructor(readonly max: number) {}

  push(line: string): void {
    this.#lines.push(line);
    if (this.#lines.length > this.max) {
      this.#lines.shift();
      this.#dropped += 1;
    }
    for (const wake of this.#waiters) wake();
  }

  /** Total lines ever pushed. */
  get count(): number {
    return this.#dropped + this.#lines.length;
  }

  get lines(): readonly string[] {
    return this.#lines;
  }

  /** First line with absolute index >= from that matches. */
  find(pattern: RegExp, from: number): LineMatch | undefined {
    for (let index = Math.max(from, this.#dropped); index < this.count; index++) {
      const line = this.#lines[index - this.#dropped] ?? '';
      pattern.lastIndex = 0;
      const match = pattern.exec(line);
      if (match) return { line, index, match };
    }
    return undefined;
  }

  onLine(wake: () => void): () => void {
    this.#waiters.add(wake);
    return () => this.#waiters.delete(wake);
  }
}

export class ManagedProcess implements AsyncDisposable {
  readonly name: string;
  readonly #child: ChildProcess;
  readonly #out: Record<StreamName, LineBuffer>;
  readonly #exit: Promise<ExitStatus>;
  #status: ExitStatus | undefined;

  private constructor(options: ProcessOptions) {
    this.name = options.name ?? options.command.split('/').pop() ?? options.command;
    const max = options.maxLines ?? 10_000;
    this.#out = { stdout: new LineBuffer(max), stderr: new LineBuffer(max) };
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const [key, value] of Object.entries(options.env ?? {})) {
      if (value === undefined) delete env[key];
      else env[key] = value;
    }
    this.#child = spawn(options.command, [...(options.args ?? [])], {
      cwd: options.cwd ?? REPO_ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    const echo = options.echo ?? process.env.CDC_TEST_ECHO === '1';
    for (const stream of ['stdout', 'stderr'] as const) {
      const source = this.#child[stream];
      if (!source) continue;
      createInterface({ input: source, crlfDelay: Infinity }).on('line', (line) => {
        this.#out[stream].push(line);
        if (echo) process.stderr.write(`[${this.name}${stream === 'stderr' ? '!' : ''}] ${line}\n`);
      });
    }
    live.add(this);
    this.#exit = new Promise<ExitStatus>((resolve) => {
      const done = (status: ExitStatus): void => {
        if (this.#status) return;
        this.#status = status;
        live.delete(this);
        resolve(status);
      };
      // 'close' (not 'exit'): all output has been read by then.
      this.#child.once('close', (code, signal) => done({ code, signal }));
      this.#child.once('error', (error) => {
        this.#out.stderr.push(`spawn failed: ${error.message}`);
        done({ code: null, signal: null });
      });
    });
  }

  static spawn(options: ProcessOptions): ManagedProcess {
    return new ManagedProcess(options);
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  /** Exit status once the process ended (and its output was read), else undefined. */
  get status(): ExitStatus | undefined {
    return this.#status;
  }

  get stdout(): readonly string[] {
    return this.#out.stdout.lines;
  }

  get stderr(): readonly string[] {
    return this.#out.stderr.lines;
  }

  /** Number of stdout lines printed so far: pass as `from` to wait only for newer lines. */
  get stdoutCount(): number {
    return this.#out.stdout.count;
  }

  /**
   * Resolves with the first line (from absolute index `from`, default 0) matching `pattern`.
   * Rejects when the process exits first or after `timeoutMs`, quoting the last lines.
   */
  waitForLine(
    pattern: RegExp,
    timeoutMs: number,
    options: { from?: number; stream?: StreamName } = {},
  ): Promise<LineMatch> {
    const buffer = this.#out[options.stream ?? 'stdout'];
    const from = options.from ?? 0;
    const found = buffer.find(pattern, from);
    if (found) return Promise.resolve(found);
    return new Promise<LineMatch>((resolve, reject) => {
      let scanned = from;
      const finish = (error?: Error, result?: LineMatch): void => {
        clearTimeout(timer);
        unsubscribe();
        if (result) resolve(result);
        else reject(error);
      };
      const timer = setTimeout(
        () => finish(new WaitTimeoutError(`${this.name}: a line matching ${pattern}\n${this.#tail()}`, timeoutMs)),
        timeoutMs,
      );
      const unsubscribe = buffer.onLine(() => {
        const match = buffer.find(pattern, scanned);
        scanned = buffer.count;
        if (match) finish(undefined, match);
      });
      void this.#exit.then((status) => {
        const match = buffer.find(pattern, scanned);
        if (match) finish(undefined, match);
        else finish(new Error(`${this.name} exited (${describe(status)}) before printing a line matching ${pattern}\n${this.#tail()}`));
      });
    });
  }

  /** Sends `signal` to the whole process group. A no-op once the process has exited. */
  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    const pid = this.#child.pid;
    if (pid === undefined || this.#status) return;
    try {
      process.kill(-pid, signal);
    } catch {
      // The group is gone already (exited between the check and the kill).
    }
  }

  /** Resolves with the exit status; rejects after `timeoutMs`. */
  waitForExit(timeoutMs: number): Promise<ExitStatus> {
    if (this.#status) return Promise.resolve(this.#status);
    return new Promise<ExitStatus>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new WaitTimeoutError(`${this.name} (pid ${this.pid}) to exit\n${this.#tail()}`, timeoutMs)),
        timeoutMs,
      );
      void this.#exit.then((status) => {
        clearTimeout(timer);
        resolve(status);
      });
    });
  }

  /** SIGTERM, wait up to `graceMs`, then SIGKILL. Idempotent; never rejects. */
  async stop(graceMs = 5_000): Promise<ExitStatus> {
    if (this.#status) return this.#status;
    this.kill('SIGTERM');
    try {
      return await this.waitForExit(graceMs);
    } catch {
      this.kill('SIGKILL');
      return this.#exit;
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  #tail(lines = 20): string {
    const pick = (stream: StreamName) => this.#out[stream].lines.slice(-lines).map((l) => `  ${stream}| ${l}`);
    return [...pick('stdout'), ...pick('stderr')].join('\n');
  }
}

function describe(status: ExitStatus): string {
  return status.signal ? `signal ${status.signal}` : `code ${status.code}`;
}

const requireFromRoot = createRequire(join(REPO_ROOT, 'package.json'));

/**
 * Runs a TypeScript entry point (e.g. `apps/reader/src/main.ts`, relative to the repo
 * root) in ONE node process with tsx's loader, so signals hit the app itself rather
 * than a wrapper (the `tsx` CLI would fork a second process).
 */
export function spawnApp(
  entry: string,
  options: Omit<ProcessOptions, 'command' | 'args'> & { readonly args?: readonly string[] } = {},
): ManagedProcess {
  const loader = pathToFileURL(requireFromRoot.resolve('tsx')).href;
  return ManagedProcess.spawn({
    name: entry.replace(/^apps\/([^/]+)\/.*$/, '$1'),
    ...options,
    command: process.execPath,
    args: ['--import', loader, entry, ...(options.args ?? [])],
  });
}

/**
 * Runs an app's esbuild bundle (`apps/<name>/dist/main.js`, from `pnpm build`) with plain
 * node, as its container does: no loader thread, no transform cache, and the
 * NODE_OPTIONS (heap caps) of the app's Dockerfile unless `env` sets its own. For
 * measurements (the bench), where tsx's own memory and CPU would be counted as the app's.
 */
export function spawnBuiltApp(
  entry: string,
  options: Omit<ProcessOptions, 'command' | 'args'> & { readonly args?: readonly string[]; readonly nodeArgs?: readonly string[] } = {},
): ManagedProcess {
  const bundle = entry.replace(/^(apps\/[^/]+)\/src\/main\.ts$/, '$1/dist/main.js');
  if (bundle === entry) throw new RangeError(`not an app entry point (apps/<name>/src/main.ts): ${entry}`);
  if (!existsSync(join(REPO_ROOT, bundle))) throw new Error(`${bundle} is missing: run \`pnpm build\` first`);
  const dockerfile = join(REPO_ROOT, entry.replace(/src\/main\.ts$/, 'Dockerfile'));
  const nodeOptions = existsSync(dockerfile) ? /^ENV NODE_OPTIONS="?([^"\n]*)"?$/m.exec(readFileSync(dockerfile, 'utf8'))?.[1] : undefined;
  return ManagedProcess.spawn({
    name: entry.replace(/^apps\/([^/]+)\/.*$/, '$1'),
    ...options,
    env: { ...(nodeOptions ? { NODE_OPTIONS: nodeOptions } : {}), ...options.env },
    command: process.execPath,
    args: [...(options.nodeArgs ?? []), '--enable-source-maps', bundle, ...(options.args ?? [])],
  });
}
