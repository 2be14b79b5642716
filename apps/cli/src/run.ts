/**
 * `cdc run <file>`: the Supervisor over the file's apps, their health as it changes, and a
 * progress line every `progressMs` (reader events out, each sink's events applied, the
 * slots' lag, apps ready, restarts), until SIGINT/SIGTERM: then every app is drained,
 * upstream first, and the command exits 0.
 */
import { loadPipelineFile, pipelineFileEnv, PIPELINE_APPS } from '@cdc/runtime';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { planApps, sumMetric, type PlannedApp } from './plan.ts';
import { Supervisor } from './supervisor.ts';

export interface RunOptions {
  readonly logDir?: string;
  readonly echo?: boolean;
  readonly progressMs: number;
  /** The directory holding apps/<app>/dist/main.js; default: this CLI's own checkout. */
  readonly appsDir?: string;
}

const out = (line: string): void => {
  process.stdout.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);
};

async function get(app: PlannedApp, path: string): Promise<{ status: number; text: string } | undefined> {
  try {
    const response = await fetch(`http://${app.host}:${app.port}${path}`, { signal: AbortSignal.timeout(2_000) });
    return { status: response.status, text: await response.text() };
  } catch {
    return undefined;
  }
}

function describeReadiness(body: string): string {
  try {
    const parsed = JSON.parse(body) as { checks?: Record<string, { ok: boolean; detail?: string }> };
    const failing = Object.entries(parsed.checks ?? {}).filter(([, c]) => !c.ok);
    return failing.map(([name, c]) => `${name}${c.detail ? `:${c.detail}` : ''}`).join(' ');
  } catch {
    return '';
  }
}

export async function runPipeline(filePath: string, options: RunOptions): Promise<void> {
  const path = resolve(filePath);
  const file = loadPipelineFile(path);
  const apps = planApps(file, path);
  const appsDir = options.appsDir ? resolve(options.appsDir) : fileURLToPath(new URL('../..', import.meta.url));
  const bundle = (app: PlannedApp): string => join(appsDir, app.app, 'dist', 'main.js');
  const missing = [...new Set(apps.map(bundle))].filter((b) => !existsSync(b));
  if (missing.length > 0) throw new Error(`${missing.join(', ')} missing: build the apps first (pnpm build)`);
  const logDir = options.logDir ?? join(tmpdir(), `cdc-${file.pipeline}`);
  // The apps take a variable of the environment over the file's value: say so, it is easy to forget one exported.
  const fromFile = new Set(
    PIPELINE_APPS.flatMap((app) =>
      app === 'reader' ? file.sources.flatMap((s) => Object.keys(pipelineFileEnv(file, app, { sourceId: s.id }))) : app === 'committer' ? file.sinks.flatMap((s) => Object.keys(pipelineFileEnv(file, app, { sinkName: s.name }))) : Object.keys(pipelineFileEnv(file, app)),
    ),
  );
  const overriding = [...fromFile].filter((variable) => process.env[variable] !== undefined && !['SOURCE_ID', 'SINK_NAME'].includes(variable)).sort();
  if (overriding.length > 0) out(`note: ${overriding.join(', ')} set in this environment override the file's values in every app`);
  out(`pipeline ${file.pipeline}: ${apps.length} apps (${apps.map((a) => a.name).join(', ')}), logs in ${logDir}`);

  let stopping = false;
  let supervisor: Supervisor | undefined;
  let resolveStop: () => void = () => undefined;
  const stopped = new Promise<void>((r) => (resolveStop = r));
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    out(`${signal}: draining (upstream first)`);
    resolveStop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const ready = new Map<string, string>();
  let previous: { at: number; events: number } | undefined;
  const watch = async (): Promise<void> => {
    // Health as it changes.
    await Promise.all(
      apps.map(async (app) => {
        const answer = await get(app, '/readyz');
        const state = answer === undefined ? 'down' : answer.status === 200 ? 'ready' : `not ready ${describeReadiness(answer.text)}`.trim();
        if (ready.get(app.name) !== state) out(`${app.name}: ${state}`);
        ready.set(app.name, state);
      }),
    );
  };
  const progress = async (): Promise<void> => {
    const scraped = await Promise.all(apps.map(async (app) => ({ app, text: (await get(app, '/metrics'))?.text ?? '' })));
    const readers = scraped.filter((s) => s.app.app === 'reader');
    const events = readers.reduce((sum, s) => sum + (sumMetric(s.text, 'cdc_stage_events_out_total') ?? 0), 0);
    const slotLag = readers.reduce((sum, s) => sum + (sumMetric(s.text, 'cdc_reader_slot_lag_bytes') ?? 0), 0);
    const sinks = scraped.filter((s) => s.app.app === 'committer').map((s) => `${s.app.name.replace(/^committer:/, '')} ${sumMetric(s.text, 'cdc_committer_events_applied_total') ?? '-'}`);
    const now = Date.now();
    const rate = previous ? Math.max(0, Math.round(((events - previous.events) * 1000) / (now - previous.at))) : 0;
    previous = { at: now, events };
    const up = [...ready.values()].filter((s) => s === 'ready').length;
    const restarts = supervisor?.status().reduce((sum, s) => sum + s.restarts, 0) ?? 0;
    out(`progress: read ${events} (${rate}/s) | applied ${sinks.join(', ')} | slot lag ${(slotLag / 1024).toFixed(1)} kB | ready ${up}/${apps.length} | restarts ${restarts}`);
  };

  try {
    const starting = Supervisor.start({ apps, bundle, logDir, out, ...(options.echo ? { echo: true } : {}) });
    supervisor = await Promise.race([starting, stopped.then(() => starting)]);
    let lastProgress = 0;
    while (!stopping) {
      await watch();
      if (Date.now() - lastProgress >= options.progressMs) {
        lastProgress = Date.now();
        await progress();
      }
      await Promise.race([stopped, new Promise((r) => setTimeout(r, 1_000))]);
    }
  } finally {
    await supervisor?.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  out('all apps stopped');
}
