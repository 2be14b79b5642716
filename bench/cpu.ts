/**
 * CPU per change for every process a workload runs on (issue #12): utime + stime from
 * /proc/<pid>/stat (a process's stat already sums its threads) over the workload window
 * (the baseline sample right before the generator starts → the sink holding every change),
 * divided by the workload's changes.
 *
 *   apps          each pipeline process (reader, reorderers, gate, committer), by the pid the
 *                 bench spawned, plus any live descendants and reaped children (cutime/cstime);
 *   servers       nats-server, redis-server, etcd and (Kafka runs) the Kafka broker: the
 *                 process listening on the port of its URL (/proc/net/tcp → socket inode →
 *                 /proc/<pid>/fd), or else by process name;
 *   PostgreSQL    the postmaster and all of its children. Children come and go inside the
 *                 window (the generator's sessions), so the total is exact from the
 *                 postmaster's own ticks plus its reaped children's (cutime/cstime) plus its
 *                 live children's, and the parts are attributed per backend from
 *                 pg_stat_activity, each backend's ticks read every PERIOD_MS:
 *                   walsender   the walsender on the workload's source database (our slot)
 *                   sink        the committer's sessions on the sink database
 *                   reader      the reader's SQL sessions (heartbeat, setup) on the source
 *                   background  checkpointer, WAL writer, bgwriter, autovacuum… (server-wide)
 *                   generator   the bench's generator sessions — the source application, NOT
 *                               counted in the pipeline total
 *                   bench       the bench's own sessions (sampler, verifier) — not counted
 *                   other       sessions on other databases (other users of the shared
 *                               server) — not counted
 *                   exited      ticks of backends that exited after their last read (≤ PERIOD_MS
 *                               of each one's life), unattributed — not counted
 * The shared servers (nats, redis, etcd, kafka, PostgreSQL's background processes) also do
 * work for whoever else uses them during the window; on a quiet machine that is nothing.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import pg from 'pg';
import type { ServerUrls } from '../tests/harness/servers.ts';

const PERIOD_MS = 100;

let clockTicks: number | undefined;
/** Kernel clock ticks per second (USER_HZ), the unit of /proc/<pid>/stat times. */
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

interface Stat {
  readonly comm: string;
  readonly ppid: number;
  /** utime + stime, ticks */
  readonly self: number;
  /** cutime + cstime (reaped children), ticks */
  readonly children: number;
  /** start time since boot, ticks: with the pid, a process's identity (pids are reused) */
  readonly start: number;
}

function readStat(pid: number): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  // Fields after "pid (comm)": state(3) ppid(4) … utime(14) stime(15) cutime(16) cstime(17) … starttime(22).
  const f = text.slice(close + 2).split(' ');
  if (f[0] === 'Z' || f[0] === 'X') return undefined;
  const n = (index: number): number => Number(f[index] ?? 0);
  return { comm: text.slice(open + 1, close), ppid: n(1), self: n(11) + n(12), children: n(13) + n(14), start: n(19) };
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const list = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
      if (list) for (const child of list.split(/\s+/)) out.push(Number(child));
    }
    return out;
  } catch {
    // No /proc/<pid>/task/*/children (CONFIG_PROC_CHILDREN off): scan every process's ppid.
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      if (readStat(Number(entry))?.ppid === pid) out.push(Number(entry));
    }
    return out;
  }
}

/** Ticks of a process and everything under it: its own, its reaped children's, its live descendants'. */
function treeTicks(pid: number, depth = 0): number {
  const stat = readStat(pid);
  if (!stat) return 0;
  let ticks = stat.self + stat.children;
  if (depth < 4) for (const child of childrenOf(pid)) ticks += treeTicks(child, depth + 1);
  return ticks;
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
  } catch {
    return '';
  }
}

/** The pid of the process listening on a local TCP port: /proc/net/tcp{,6} → socket inode → the fd holding it. */
export function listenerPid(port: number): number | undefined {
  const inodes = new Set<string>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      const local = f[1];
      if (!local || f[3] !== '0A') continue; // 0A = LISTEN
      if (Number.parseInt(local.slice(local.lastIndexOf(':') + 1), 16) === port && f[9] && f[9] !== '0') inodes.add(f[9]);
    }
  }
  if (inodes.size === 0) return undefined;
  const holders: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${entry}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let target = '';
      try {
        target = readlinkSync(`/proc/${entry}/fd/${fd}`);
      } catch {
        continue;
      }
      const match = /^socket:\[(\d+)\]$/.exec(target);
      if (match?.[1] && inodes.has(match[1])) {
        holders.push(Number(entry));
        break;
      }
    }
  }
  // Several holders (a forked child that kept the socket): the one whose parent is not a holder.
  return holders.find((pid) => !holders.includes(readStat(pid)?.ppid ?? -1)) ?? holders[0];
}

/** Fallback: the oldest process whose name (or command line) matches. */
function pidByName(match: (comm: string, cmd: string) => boolean): number | undefined {
  let best: { pid: number; start: number } | undefined;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    const stat = readStat(pid);
    if (!stat || !match(stat.comm, cmdline(pid))) continue;
    if (!best || stat.start < best.start) best = { pid, start: stat.start };
  }
  return best?.pid;
}

function portOf(url: string | undefined, fallback: number): number {
  if (!url) return fallback;
  const match = /:(\d+)(?:\/|$|,)/.exec(url.replace(/^[a-z]+:\/\//, 'x://'));
  return match?.[1] ? Number(match[1]) : fallback;
}

export type ServerName = 'nats-server' | 'redis-server' | 'etcd' | 'kafka' | 'postgres';

/** Where the shared servers run: by the port of each URL, else by process name. */
export function findServers(urls: ServerUrls): Partial<Record<ServerName, number>> {
  const found: Partial<Record<ServerName, number>> = {};
  const find = (name: ServerName, port: number, byName: (comm: string, cmd: string) => boolean): void => {
    const pid = listenerPid(port) ?? pidByName(byName);
    if (pid !== undefined) found[name] = pid;
  };
  find('postgres', portOf(urls.postgres, 5432), (comm, cmd) => comm === 'postgres' && !cmd.startsWith('postgres:'));
  find('nats-server', portOf(urls.nats, 4222), (comm) => comm === 'nats-server');
  find('redis-server', portOf(urls.redis, 6379), (comm) => comm === 'redis-server');
  if (urls.etcd) find('etcd', portOf(urls.etcd, 2379), (comm) => comm === 'etcd');
  const broker = urls.kafkaBrokers[0];
  if (broker) find('kafka', portOf(`x://${broker}`, 9092), (comm, cmd) => comm === 'java' && cmd.includes('kafka.Kafka'));
  // A postmaster's listener is the postmaster itself; make sure (a backend never holds it).
  if (found.postgres !== undefined) {
    const stat = readStat(found.postgres);
    if (stat && stat.comm === 'postgres' && readStat(stat.ppid)?.comm === 'postgres') found.postgres = stat.ppid;
  }
  return found;
}

export type PgRole = 'walsender' | 'sink' | 'reader' | 'background' | 'generator' | 'bench' | 'other' | 'exited';
export const PG_ROLES: readonly PgRole[] = ['walsender', 'sink', 'reader', 'background', 'generator', 'bench', 'other', 'exited'];
/** Roles that are the pipeline's work (and the server's own housekeeping); the rest is listed, not counted. */
export const PG_COUNTED: ReadonlySet<PgRole> = new Set(['walsender', 'sink', 'reader', 'background']);

export interface CpuEntry {
  /** app name, server name, or `postgres: <role>` */
  readonly name: string;
  readonly kind: 'app' | 'server' | 'postgres';
  readonly pid?: number;
  readonly cpuMs: number;
  readonly usPerChange: number;
  /** Part of the pipeline total (false: the generator, the bench itself, other users of the shared server). */
  readonly counted: boolean;
  /**
   * Apps and servers: CPU in the idle settle before the window (pipeline started, nothing
   * written), in % of one core — the floor (heartbeats, watermarks, polling) that a short
   * workload divides by few changes. Absent when the time before the window was not idle (a warm-up).
   */
  readonly idleCpuPercent?: number;
}

export interface CpuReport {
  readonly windowMs: number;
  readonly changes: number;
  readonly ticksPerSecond: number;
  readonly entries: readonly CpuEntry[];
  /** Sum of the counted entries ÷ changes: the pipeline's CPU per change. */
  readonly totalUsPerChange: number;
  /** Every entry, the not-counted ones too. */
  readonly allUsPerChange: number;
  /** PostgreSQL, every child of the postmaster (exact): counted + not counted parts. */
  readonly postgresUsPerChange: number;
  /** The counted entry with the most CPU per change (PostgreSQL's background excluded: it is the server's, not a stage). */
  readonly heaviest?: { readonly name: string; readonly usPerChange: number };
  /** Pids that could not be found (that server is missing from the entries). */
  readonly missing: readonly string[];
}

interface Backend {
  role: PgRole | undefined;
  /** ticks at the window start; 0 when born after it */
  base: number;
  last: number;
  known: boolean;
  /** pg_stat_activity lookups that did not list it */
  misses: number;
}

/**
 * Tracks every process of one workload. `create` starts following PostgreSQL's children;
 * `begin` opens the window; `end` closes it and returns the report; `close` stops.
 */
export class CpuMeter {
  readonly #apps: () => Record<string, number | undefined>;
  readonly #servers: Partial<Record<ServerName, number>>;
  readonly #client: pg.Client | undefined;
  readonly #sourceDb: string;
  readonly #sinkDb: string;
  readonly #backends = new Map<string, Backend & { pid: number }>();
  #timer: NodeJS.Timeout | undefined;
  #tick: Promise<void> = Promise.resolve();
  #window: { t: number; apps: Record<string, number>; servers: Record<string, number>; postmaster: Stat | undefined } | undefined;
  #created: { t: number; apps: Record<string, number>; servers: Record<string, number> } | undefined;
  #idle: Record<string, number> = {};

  private constructor(options: {
    apps: () => Record<string, number | undefined>;
    servers: Partial<Record<ServerName, number>>;
    client: pg.Client | undefined;
    sourceDb: string;
    sinkDb: string;
  }) {
    this.#apps = options.apps;
    this.#servers = options.servers;
    this.#client = options.client;
    this.#sourceDb = options.sourceDb;
    this.#sinkDb = options.sinkDb;
  }

  static async create(options: {
    urls: ServerUrls;
    /** Server pids (findServers); the Kafka broker is measured only when present here. */
    servers: Partial<Record<ServerName, number>>;
    apps: () => Record<string, number | undefined>;
    sourceDb: string;
    sinkDb: string;
  }): Promise<CpuMeter> {
    let client: pg.Client | undefined;
    if (options.servers.postgres !== undefined) {
      client = new pg.Client({ connectionString: options.urls.postgres, application_name: 'cdc-bench-cpu' });
      await client.connect();
    }
    const meter = new CpuMeter({ ...options, client });
    meter.#created = { t: Date.now(), apps: meter.#appTicks(), servers: meter.#serverTicks() };
    await meter.#sample();
    meter.#schedule();
    return meter;
  }

  #schedule(): void {
    this.#timer = setTimeout(() => {
      this.#tick = this.#sample().finally(() => {
        if (this.#timer) this.#schedule();
      });
    }, PERIOD_MS);
  }

  async #sample(): Promise<void> {
    const postmaster = this.#servers.postgres;
    if (postmaster === undefined) return;
    let unknown = false;
    for (const pid of childrenOf(postmaster)) {
      const stat = readStat(pid);
      if (!stat) continue;
      const key = `${pid}:${stat.start}`;
      let backend = this.#backends.get(key);
      if (!backend) {
        backend = { pid, role: undefined, base: this.#window ? 0 : stat.self, last: stat.self, known: false, misses: 0 };
        this.#backends.set(key, backend);
      }
      backend.last = stat.self;
      if (!backend.known) unknown = true;
    }
    if (unknown) await this.#classify();
  }

  async #classify(): Promise<void> {
    let rows: { pid: number; datname: string | null; backend_type: string | null; application_name: string | null }[] = [];
    try {
      rows = (await this.#client?.query('SELECT pid, datname, backend_type, application_name FROM pg_stat_activity'))?.rows ?? [];
    } catch {
      return; // next tick
    }
    const byPid = new Map(rows.map((row) => [Number(row.pid), row]));
    for (const backend of this.#backends.values()) {
      if (backend.known) continue;
      const row = byPid.get(backend.pid);
      if (row) {
        backend.role = this.#role(row.datname ?? '', row.backend_type ?? '', row.application_name ?? '');
        backend.known = true;
      } else {
        // Not (yet) in pg_stat_activity: a backend still authenticating, or a process the view
        // does not list (the logger). Its process title says which database, if any.
        const title = cmdline(backend.pid);
        // A session's title: "postgres: <user> <db> <host>(<port>)|[local] <state>" (walsender: "postgres: walsender <user> <db> …").
        const db = /^postgres: (?:walsender )?\S+ (\S+) (?:\[local\]|\S*\(\d+\))/.exec(title)?.[1];
        backend.role = db === undefined ? 'background' : db === this.#sourceDb || db === this.#sinkDb ? 'bench' : 'other';
        // Three misses (~300 ms): not an authenticating backend; keep the title's answer.
        backend.misses += 1;
        if (backend.misses >= 3) backend.known = true;
      }
    }
  }

  #role(datname: string, backendType: string, app: string): PgRole {
    if (backendType === 'walsender') return datname === this.#sourceDb ? 'walsender' : 'other';
    if (backendType !== 'client backend') return 'background';
    if (datname === this.#sinkDb && app.startsWith('cdc-committer')) return 'sink';
    if (datname === this.#sourceDb && app.startsWith('cdc-reader')) return 'reader';
    if (app === 'cdc-bench-generator') return datname === this.#sourceDb ? 'generator' : 'other';
    if (datname === this.#sourceDb || datname === this.#sinkDb || app.startsWith('cdc-bench')) return 'bench';
    return 'other';
  }

  #appTicks(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [name, pid] of Object.entries(this.#apps())) if (pid !== undefined) out[name] = treeTicks(pid);
    return out;
  }

  #serverTicks(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [name, pid] of Object.entries(this.#servers)) {
      if (name === 'postgres' || pid === undefined) continue;
      out[name] = treeTicks(pid);
    }
    return out;
  }

  /**
   * Opens the window: every process's ticks now. `idle`: nothing ran since create() but the
   * pipeline idling, so the CPU since then is reported as each process's idle floor.
   */
  async begin(options: { idle: boolean }): Promise<void> {
    await this.#tick;
    await this.#sample();
    const postmaster = this.#servers.postgres;
    // Backends that exited before the window were reaped into the postmaster's cutime
    // before it: forget them, so their ticks are not subtracted from the window's.
    const alive = new Set<string>();
    if (postmaster !== undefined) {
      for (const pid of childrenOf(postmaster)) {
        const stat = readStat(pid);
        if (stat) alive.add(`${pid}:${stat.start}`);
      }
    }
    for (const [key, backend] of this.#backends) {
      if (alive.has(key)) backend.base = backend.last;
      else this.#backends.delete(key);
    }
    this.#window = {
      t: Date.now(),
      apps: this.#appTicks(),
      servers: this.#serverTicks(),
      postmaster: postmaster === undefined ? undefined : readStat(postmaster),
    };
    const created = this.#created;
    const seconds = created ? (this.#window.t - created.t) / 1000 : 0;
    if (options.idle && created && seconds >= 0.5) {
      const hz = ticksPerSecond();
      const percent = (now: number, then: number | undefined): number => (then === undefined ? 0 : ((now - then) / hz / seconds) * 100);
      for (const [name, ticks] of Object.entries(this.#window.apps)) this.#idle[name] = percent(ticks, created.apps[name]);
      for (const [name, ticks] of Object.entries(this.#window.servers)) this.#idle[name] = percent(ticks, created.servers[name]);
    }
  }

  /** Closes the window and reports; the meter keeps following until close(). */
  async end(changes: number): Promise<CpuReport> {
    const start = this.#window;
    if (!start) throw new Error('CpuMeter.end() before begin()');
    await this.#tick;
    const alive = new Set<string>();
    const postmasterPid = this.#servers.postgres;
    if (postmasterPid !== undefined) {
      for (const pid of childrenOf(postmasterPid)) {
        const stat = readStat(pid);
        if (stat) alive.add(`${pid}:${stat.start}`);
      }
    }
    await this.#sample();
    const apps = this.#appTicks();
    const servers = this.#serverTicks();
    const postmaster = postmasterPid === undefined ? undefined : readStat(postmasterPid);
    const windowMs = Date.now() - start.t;
    const hz = ticksPerSecond();
    const entry = (name: string, kind: CpuEntry['kind'], ticks: number, counted: boolean, pid?: number): CpuEntry => {
      const cpuMs = (Math.max(0, ticks) * 1000) / hz;
      const idle = this.#idle[name];
      return {
        name, kind, ...(pid === undefined ? {} : { pid }), cpuMs, usPerChange: changes > 0 ? (cpuMs * 1000) / changes : 0, counted,
        ...(idle === undefined ? {} : { idleCpuPercent: idle }),
      };
    };
    const entries: CpuEntry[] = [];
    const missing: string[] = [];
    const appPids = this.#apps();
    for (const [name, ticks] of Object.entries(apps)) entries.push(entry(name, 'app', ticks - (start.apps[name] ?? 0), true, appPids[name]));
    for (const name of ['nats-server', 'redis-server', 'etcd', 'kafka'] as const) {
      const ticks = servers[name];
      if (ticks === undefined || start.servers[name] === undefined) {
        if (name !== 'kafka' && name !== 'etcd') missing.push(name);
        continue;
      }
      entries.push(entry(name, 'server', ticks - (start.servers[name] ?? 0), true, this.#servers[name]));
    }
    let postgresTicks = 0;
    if (postmaster && start.postmaster) {
      // Exact: the postmaster's own ticks, its reaped children's (whole lives: minus what those
      // alive at the start had already used), and its live children's since the start.
      let exitedBase = 0;
      let liveSince = 0;
      for (const [key, backend] of this.#backends) {
        if (alive.has(key)) liveSince += backend.last - backend.base;
        else exitedBase += backend.base; // 0 for a backend born inside the window
      }
      postgresTicks = postmaster.self - start.postmaster.self + (postmaster.children - start.postmaster.children) - exitedBase + liveSince;
      const byRole = new Map<PgRole, number>(PG_ROLES.map((role) => [role, 0]));
      let attributed = 0;
      for (const backend of this.#backends.values()) {
        const used = backend.last - backend.base;
        if (used <= 0) continue;
        const role = backend.role ?? 'background';
        byRole.set(role, (byRole.get(role) ?? 0) + used);
        attributed += used;
      }
      byRole.set('background', (byRole.get('background') ?? 0) + postmaster.self - start.postmaster.self);
      attributed += postmaster.self - start.postmaster.self;
      byRole.set('exited', Math.max(0, postgresTicks - attributed));
      for (const role of PG_ROLES) entries.push(entry(`postgres: ${role}`, 'postgres', byRole.get(role) ?? 0, PG_COUNTED.has(role)));
    } else {
      missing.push('postgres');
    }
    const sum = (list: readonly CpuEntry[]): number => list.reduce((total, e) => total + e.usPerChange, 0);
    const counted = entries.filter((e) => e.counted);
    const heaviest = counted.filter((e) => e.name !== 'postgres: background').sort((a, b) => b.usPerChange - a.usPerChange)[0];
    return {
      windowMs,
      changes,
      ticksPerSecond: hz,
      entries,
      totalUsPerChange: sum(counted),
      allUsPerChange: sum(entries),
      postgresUsPerChange: changes > 0 ? ((Math.max(0, postgresTicks) * 1000) / hz) * 1000 / changes : 0,
      ...(heaviest ? { heaviest: { name: heaviest.name, usPerChange: heaviest.usPerChange } } : {}),
      missing,
    };
  }

  async close(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#tick;
    await this.#client?.end().catch(() => undefined);
  }
}

/** Redis INFO memory `used_memory` (bytes), or null when Redis cannot be asked. */
export async function redisUsedMemory(redisUrl: string): Promise<number | null> {
  const { Redis } = await import('ioredis');
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: 3_000 });
  try {
    await redis.connect();
    const info = await redis.info('memory');
    const match = /^used_memory:(\d+)/m.exec(info);
    return match?.[1] ? Number(match[1]) : null;
  } catch {
    return null;
  } finally {
    redis.disconnect();
  }
}
