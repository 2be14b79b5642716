/** The fault helpers themselves: spawn, watch output, signal, wait — all bounded. */
import { readFileSync } from 'node:fs';
import { ManagedProcess, WaitTimeoutError, describe, expect, test, waitFor } from './index.ts';

const APP = 'tests/harness/fixtures/echo-app.ts';

/** Running, and not a zombie waiting for an init process that may never reap it. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) [ZX] /.test(stat);
  } catch {
    return false;
  }
}

describe('ManagedProcess', () => {
  test('a runner stopped by SIGTERM takes the apps it spawned with it (no orphans)', async ({ ctx }) => {
    const runner = ctx.spawnApp('tests/harness/fixtures/runner.ts');
    const spawned = await runner.waitForLine(/"msg":"spawned"/, 30_000);
    const appPid = (JSON.parse(spawned.line) as { pid: number }).pid;
    expect(alive(appPid)).toBe(true);
    runner.kill('SIGTERM');
    await runner.waitForExit(10_000);
    await waitFor(() => !alive(appPid), { what: `the runner's app (pid ${appPid}) to be gone`, timeoutMs: 10_000 });
  });

  test('spawnApp runs a TypeScript app with the server URLs in its env and stops it with SIGTERM', async ({ ctx }) => {
    const app = ctx.spawnApp(APP, { env: { EXTRA: 'yes' } });
    const started = await app.waitForLine(/"msg":"started"/, 20_000);
    const line = JSON.parse(started.line) as { pid: number; env: Record<string, string> };
    // One process: signals reach the app itself, not a wrapper.
    expect(line.pid).toBe(app.pid);
    expect(line.env).toEqual({ POSTGRES_URL: ctx.servers.postgres, KAFKA_BROKERS: ctx.servers.kafkaBrokers.join(','), EXTRA: 'yes' });

    const from = app.stdoutCount;
    const tick = await app.waitForLine(/^tick (\d+)$/, 5_000, { from });
    expect(tick.index).toBeGreaterThanOrEqual(from);
    app.kill('SIGTERM');
    expect(await app.waitForExit(5_000)).toEqual({ code: 0, signal: null });
    expect(app.stdout.at(-1)).toBe('draining');
    expect(app.status).toEqual({ code: 0, signal: null });
  });

  test('SIGKILL takes down the whole process group, and waiting for a line that never comes fails at once', async ({ ctx }) => {
    const app = ctx.spawnApp(APP, { args: ['--spawn-child'] });
    const child = JSON.parse((await app.waitForLine(/"msg":"child"/, 20_000)).line) as { pid: number };
    expect(alive(child.pid)).toBe(true);

    const never = app.waitForLine(/never printed/, 30_000);
    app.kill('SIGKILL');
    await expect(never).rejects.toThrow(/exited \(signal SIGKILL\) before printing/);
    expect(await app.waitForExit(5_000)).toEqual({ code: null, signal: 'SIGKILL' });
    await waitFor(() => !alive(child.pid), { what: `grandchild ${child.pid} to die`, timeoutMs: 5_000 });
  });

  test('waitForLine and waitForExit are bounded', async ({ ctx }) => {
    const sleeper = ctx.spawn({ name: 'sleeper', command: process.execPath, args: ['-e', 'setTimeout(() => {}, 60_000)'] });
    await expect(sleeper.waitForLine(/anything/, 200)).rejects.toBeInstanceOf(WaitTimeoutError);
    await expect(sleeper.waitForExit(200)).rejects.toBeInstanceOf(WaitTimeoutError);
    // stop(): TERM (no handler: the default action ends it).
    expect(await sleeper.stop(2_000)).toEqual({ code: null, signal: 'SIGTERM' });
  });

  test('stop() escalates to SIGKILL when SIGTERM is ignored', async () => {
    const stubborn = ManagedProcess.spawn({
      name: 'stubborn',
      command: process.execPath,
      args: ['-e', "process.on('SIGTERM', () => console.log('ignored')); console.log('ready'); setInterval(() => {}, 1000)"],
    });
    await using _ = stubborn;
    await stubborn.waitForLine(/^ready$/, 10_000);
    expect(await stubborn.stop(300)).toEqual({ code: null, signal: 'SIGKILL' });
    expect(stubborn.stdout).toContain('ignored');
  });
});
