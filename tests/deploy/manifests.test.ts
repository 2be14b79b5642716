/**
 * The deployment files are complete and consistent: infra/compose/docker-compose.yml, every
 * manifest of infra/k8s/kustomization.yaml and the apps' Dockerfiles. No server and no
 * container engine is needed: each app's environment is assembled as the orchestrator would
 * (compose: the merged `environment:` map; Kubernetes: ConfigMap + Secret + container env)
 * and run through the app's own config schema, the one its main.ts loads at start-up.
 *
 * Runs with the unit tests (vitest.unit.config.ts): it is pure parsing.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parsePipelineFile, pipelineFileEnv, type z } from '@cdc/runtime';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { committerConfigSchema } from '@cdc/app-committer/config';
import { schema as dedupGateSchema } from '@cdc/app-dedup-gate/config';
import { schema as reordererSchema } from '@cdc/app-lamport-reorderer/config';
import { readerConfigSchema } from '@cdc/app-reader/config';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const COMPOSE_DIR = `${ROOT}infra/compose/`;
const K8S_DIR = `${ROOT}infra/k8s/`;

/** The apps, by the directory under apps/ their image is built from (image `cdc-<app>:<tag>`). */
const APPS = {
  reader: readerConfigSchema,
  'lamport-reorderer': reordererSchema,
  'dedup-gate': dedupGateSchema,
  committer: committerConfigSchema,
} satisfies Record<string, z.ZodTypeAny>;
type App = keyof typeof APPS;
const APP_NAMES = Object.keys(APPS) as App[];

function appOfImage(image: unknown): App | undefined {
  if (typeof image !== 'string') return undefined;
  const match = /^(?:.*\/)?cdc-([a-z-]+)(?::[\w.-]+)?$/.exec(image);
  return APP_NAMES.find((app) => app === match?.[1]);
}

/** One running app as a deployment file describes it. */
interface Instance {
  /** `compose service "reader"`, `k8s Deployment "reader" container "reader"`. */
  readonly where: string;
  readonly app: App;
  readonly env: Record<string, string>;
  /** The parsed config, when the env passed the schema. */
  readonly config: Record<string, unknown> | undefined;
  /** Problems found while assembling the env (a missing ConfigMap key, a non-string value). */
  readonly envProblems: readonly string[];
}

/**
 * The app's environment as it sees it: with PIPELINE_FILE, the file's variables for the app
 * (`fileText` reads the file the path names inside the container) under its own.
 */
function withFile(where: string, app: App, env: Record<string, string>, fileText: (path: string) => string | undefined, problems: string[]): Record<string, string> {
  const path = env['PIPELINE_FILE'];
  if (path === undefined) return env;
  const text = fileText(path);
  if (text === undefined) {
    problems.push(`${where}: PIPELINE_FILE ${path} is no file mounted into it`);
    return env;
  }
  try {
    // As the app reads it: only its own connections need their ${VARIABLES}.
    const file = parsePipelineFile(text, env, path, { app, sourceId: env['SOURCE_ID'], sinkName: env['SINK_NAME'] });
    return { ...pipelineFileEnv(file, app, { sourceId: env['SOURCE_ID'], sinkName: env['SINK_NAME'] }), ...env };
  } catch (error) {
    problems.push(`${where}: ${error instanceof Error ? error.message : String(error)}`);
    return env;
  }
}

function instance(where: string, app: App, env: Record<string, string>, envProblems: string[]): Instance {
  const result = APPS[app].safeParse(env);
  return { where, app, env, envProblems, config: result.success ? (result.data as Record<string, unknown>) : undefined };
}

/** Every variable the app's schema refuses, named with the service: `compose service "x": PIPELINE: required`. */
function schemaProblems(instances: readonly Instance[]): string[] {
  return instances.flatMap((it) => {
    const result = APPS[it.app].safeParse(it.env);
    const issues = result.success ? [] : result.error.issues.map((issue) => `${it.where} (${it.app}): ${issue.path.join('.') || '(environment)'}: ${issue.message}`);
    return [...it.envProblems, ...issues];
  });
}

const HEAP_CAP = /--max-old-space-size=(\d+)/;

/** The port /healthz and /readyz are served on (the schemas' default is 8080). */
const healthPortOf = (it: Instance | undefined): string => it?.env['HEALTH_PORT'] ?? '8080';

/** The V8 old-space cap NODE_OPTIONS sets, in MiB. */
function heapCapMiB(nodeOptions: string | undefined): number | undefined {
  const match = nodeOptions === undefined ? null : HEAP_CAP.exec(nodeOptions);
  return match?.[1] === undefined ? undefined : Number(match[1]);
}

const MiB = 1024 * 1024;

/** Compose `mem_limit` ("256m", "1g", 268435456) in bytes. */
function composeBytes(value: unknown): number | undefined {
  if (typeof value === 'number') return value;
  const match = typeof value === 'string' ? /^(\d+(?:\.\d+)?)\s*([bkmg]?)b?$/i.exec(value.trim()) : null;
  if (!match?.[1]) return undefined;
  const unit = { '': 1, b: 1, k: 1024, m: MiB, g: 1024 * MiB }[(match[2] ?? '').toLowerCase()];
  return unit === undefined ? undefined : Number(match[1]) * unit;
}

/** A Kubernetes memory quantity ("256Mi", "1G", "300000000") in bytes. */
function quantityBytes(value: unknown): number | undefined {
  if (typeof value === 'number') return value;
  const match = typeof value === 'string' ? /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(value.trim()) : null;
  if (!match?.[1]) return undefined;
  const units: Record<string, number> = { '': 1, Ki: 1024, Mi: MiB, Gi: 1024 * MiB, Ti: 1024 * 1024 * MiB, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  return Number(match[1]) * (units[match[2] ?? ''] ?? Number.NaN);
}

/** The heap cap is set and the memory limit leaves room above it (V8 code, buffers and young space live outside it). */
function memoryProblems(where: string, nodeOptions: string | undefined, limitBytes: number | undefined, limitText: unknown): string[] {
  const heap = heapCapMiB(nodeOptions);
  if (heap === undefined) return [`${where}: NODE_OPTIONS ${JSON.stringify(nodeOptions)} sets no --max-old-space-size heap cap`];
  if (limitBytes === undefined || Number.isNaN(limitBytes)) return [`${where}: no memory limit it can be read from (${JSON.stringify(limitText)})`];
  if (limitBytes <= heap * MiB) return [`${where}: memory limit ${String(limitText)} is not above the heap cap of ${heap} MiB`];
  return [];
}

const numberOf = (value: unknown): number | undefined => (typeof value === 'number' ? value : undefined);
const stringOf = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);
const stringsOf = (value: unknown): string[] => (Array.isArray(value) ? value.filter((item): item is string => typeof item === 'string') : []);
const sameSet = (a: readonly unknown[], b: readonly unknown[]): boolean => new Set(a).size === new Set(b).size && a.every((item) => b.includes(item));

/**
 * What makes the apps one pipeline: one PIPELINE and PARTITIONS everywhere; the reorderers
 * merge exactly the readers' sources; reorderers and gates each cover every partition
 * exactly once; each committer has its own sink name and every reader's SINKS is exactly
 * the set of committers' sink names (a missing one would hold the slot forever, an extra
 * committer's positions would be ignored by the slot).
 */
function pipelineProblems(label: string, instances: readonly Instance[]): string[] {
  const parsed = instances.filter((it) => it.config !== undefined);
  const failing = instances.filter((it) => it.config === undefined).map((it) => it.where);
  const problems = failing.length === 0 ? [] : [`${label}: not checked, their environment fails its schema: ${failing.join(', ')}`];
  const cfg = (it: Instance): Record<string, unknown> => it.config ?? {};
  for (const app of APP_NAMES) {
    if (!parsed.some((it) => it.app === app)) problems.push(`${label}: no ${app}`);
  }
  const pipelines = new Set(parsed.map((it) => cfg(it)['PIPELINE']));
  if (pipelines.size > 1) problems.push(`${label}: PIPELINE differs between apps: ${[...pipelines].join(', ')}`);
  const counts = new Set(parsed.map((it) => cfg(it)['PARTITIONS']));
  if (counts.size > 1) problems.push(`${label}: PARTITIONS differs between apps: ${[...counts].join(', ')}`);
  const partitions = numberOf([...counts][0]) ?? 0;

  const of = (app: App) => parsed.filter((it) => it.app === app);
  const sourceIds = of('reader').map((it) => stringOf(cfg(it)['SOURCE_ID']));
  if (new Set(sourceIds).size !== sourceIds.length) problems.push(`${label}: two readers share a SOURCE_ID: ${sourceIds.join(', ')}`);
  for (const reorderer of of('lamport-reorderer')) {
    const sources = stringsOf(cfg(reorderer)['SOURCES']);
    if (!sameSet(sources, sourceIds)) problems.push(`${reorderer.where}: SOURCES ${sources.join(',')} is not the readers' SOURCE_IDs ${sourceIds.join(',')}`);
  }
  for (const app of ['lamport-reorderer', 'dedup-gate'] as const) {
    const owned = of(app).flatMap((it) => (Array.isArray(cfg(it)['partitions']) ? (cfg(it)['partitions'] as number[]) : []));
    const expected = Array.from({ length: partitions }, (_, p) => p);
    if (owned.length !== expected.length || !sameSet(owned, expected)) {
      problems.push(`${label}: the ${app}s' ASSIGNED_PARTITIONS cover [${owned.join(',')}], not every partition 0..${partitions - 1} exactly once`);
    }
  }

  const committers = of('committer').map((it) => ({ where: it.where, sink: cfg(it)['SINK'], name: stringOf(cfg(it)['SINK_NAME']) }));
  const names = committers.map((c) => c.name);
  if (new Set(names).size !== names.length) problems.push(`${label}: two committers share a sink name (they would fence each other): ${names.join(', ')}`);
  for (const reader of of('reader')) {
    const sinks = stringsOf(cfg(reader)['SINKS']);
    if (!sameSet(sinks, names)) {
      problems.push(`${reader.where}: SINKS=${sinks.join(',')} but the committers' sink names (SINK_NAME, default SINK) are ${committers.map((c) => `${c.where}=${c.name}`).join(', ')}`);
    }
  }
  return problems;
}

// ───────────────────────────────────────── docker compose

interface ComposeService {
  image?: unknown;
  build?: { context?: string; dockerfile?: string };
  environment?: Record<string, unknown> | unknown[];
  depends_on?: Record<string, unknown> | string[];
  healthcheck?: { test?: unknown };
  stop_grace_period?: unknown;
  mem_limit?: unknown;
  volumes?: unknown[];
}

const composeText = readFileSync(`${COMPOSE_DIR}docker-compose.yml`, 'utf8');
// `merge: true` resolves `<<: *anchor` the way compose does (YAML 1.1 merge keys).
const compose = parse(composeText, { merge: true }) as { services: Record<string, ComposeService> };
const composeServices = Object.entries(compose.services);
const composeApps = composeServices.flatMap(([name, service]) => {
  const app = appOfImage(service.image);
  return app === undefined ? [] : [{ name, service, app, where: `compose service "${name}"` }];
});

function composeEnv(where: string, service: ComposeService): { env: Record<string, string>; problems: string[] } {
  const env: Record<string, string> = {};
  const problems: string[] = [];
  if (!service.environment || Array.isArray(service.environment)) {
    return { env, problems: [`${where}: environment must be a map (the x-env anchor merges into a map only)`] };
  }
  for (const [key, value] of Object.entries(service.environment)) {
    if (key === '<<') problems.push(`${where}: environment has an unresolved merge key`);
    // Compose accepts strings and numbers; a bare true/false is a compose error.
    else if (typeof value === 'string' || typeof value === 'number') env[key] = String(value);
    else if (value !== null) problems.push(`${where}: ${key} is ${typeof value}; quote it ("${String(value)}")`);
  }
  return { env, problems };
}

/** A file mounted into the service (`./pipeline.yaml:/etc/cdc/pipeline.yaml:ro`), read from the host. */
function composeMountedFile(service: ComposeService, path: string): string | undefined {
  for (const volume of (service.volumes ?? []).map(String)) {
    const [host, container] = volume.split(':');
    if (container === path && host !== undefined && existsSync(`${COMPOSE_DIR}${host}`)) return readFileSync(`${COMPOSE_DIR}${host}`, 'utf8');
  }
  return undefined;
}

const composeInstances = composeApps.map(({ service, app, where }) => {
  const { env, problems } = composeEnv(where, service);
  return instance(where, app, withFile(where, app, env, (path) => composeMountedFile(service, path), problems), problems);
});

describe('docker compose (infra/compose/docker-compose.yml)', () => {
  it('runs every app, each image built from its own Dockerfile', () => {
    expect(new Set(composeApps.map((it) => it.app))).toEqual(new Set(APP_NAMES));
    const unnamed = composeServices.filter(([, service]) => service.build !== undefined && appOfImage(service.image) === undefined);
    const problems = unnamed.map(([name, service]) => `compose service "${name}": built here but its image ${String(service.image)} is not cdc-<app>`);
    problems.push(...composeApps.flatMap(({ where, service, app }) => {
      const dockerfile = service.build?.dockerfile;
      if (dockerfile === undefined) return [`${where}: no build.dockerfile`];
      if (dockerfile !== `apps/${app}/Dockerfile`) return [`${where}: image cdc-${app} built from ${dockerfile}`];
      const context = `${COMPOSE_DIR}${service.build?.context ?? '.'}/`;
      return existsSync(`${context}${dockerfile}`) ? [] : [`${where}: ${context}${dockerfile} does not exist`];
    }));
    expect(problems).toEqual([]);
  });

  it("every app service's environment passes its app's config schema", () => {
    expect(schemaProblems(composeInstances)).toEqual([]);
  });

  it('every app listens for its probes and /metrics on every interface (HEALTH_HOST=0.0.0.0; the default is loopback)', () => {
    expect(composeInstances.filter((it) => it.env['HEALTH_HOST'] !== '0.0.0.0').map((it) => it.where)).toEqual([]);
  });

  it('every app has a /healthz healthcheck on its HEALTH_PORT and 30 s to drain on SIGTERM', () => {
    const problems = composeApps.flatMap(({ where, service }, index) => {
      const found: string[] = [];
      const test = stringsOf(service.healthcheck?.test).join(' ');
      const port = /:(\d+)\/healthz/.exec(test)?.[1];
      const healthPort = healthPortOf(composeInstances[index]);
      if (port === undefined) found.push(`${where}: healthcheck does not GET /healthz (${JSON.stringify(test)})`);
      else if (port !== healthPort) found.push(`${where}: healthcheck on port ${port}, HEALTH_PORT is ${healthPort}`);
      const grace = /^(\d+)(s|m)$/.exec(String(service.stop_grace_period ?? ''));
      const seconds = grace?.[1] === undefined ? 0 : Number(grace[1]) * (grace[2] === 'm' ? 60 : 1);
      if (seconds < 30) found.push(`${where}: stop_grace_period ${String(service.stop_grace_period)} (want >= 30s: it drains on SIGTERM)`);
      return found;
    });
    expect(problems).toEqual([]);
  });

  it('every app caps its V8 heap (NODE_OPTIONS) below its mem_limit', () => {
    const problems = composeApps.flatMap(({ where, service }, index) =>
      memoryProblems(where, composeInstances[index]?.env['NODE_OPTIONS'], composeBytes(service.mem_limit), service.mem_limit),
    );
    expect(problems).toEqual([]);
  });

  it('the services form one pipeline whose committers are exactly the reader\'s SINKS', () => {
    expect(pipelineProblems('compose', composeInstances)).toEqual([]);
  });

  it('every server an app connects to is a compose service it waits for', () => {
    const problems = composeApps.flatMap(({ where, service }, index) => {
      const env = composeInstances[index]?.env ?? {};
      const waits = Array.isArray(service.depends_on) ? service.depends_on : Object.keys(service.depends_on ?? {});
      const hosts = [
        ...['NATS_URL', 'ETCD_URL', 'REDIS_URL', 'SOURCE_DATABASE_URL', 'SINK_DATABASE_URL']
          .filter((key) => env[key] !== undefined)
          .map((key) => ({ key, host: new URL(env[key] ?? '').hostname })),
        ...(env['KAFKA_BROKERS'] ?? '').split(',').filter(Boolean).map((broker) => ({ key: 'KAFKA_BROKERS', host: broker.split(':')[0] ?? '' })),
      ];
      return hosts.flatMap(({ key, host }) => {
        if (compose.services[host] === undefined) return [`${where}: ${key} names host ${host}, which is no compose service`];
        return waits.includes(host) ? [] : [`${where}: ${key} names ${host}, which it does not depend_on`];
      });
    });
    expect(problems).toEqual([]);
  });

  it("postgres-init creates the reader's tables in the source database and the committer's sink database", () => {
    const postgres = compose.services['postgres'];
    const initMount = (postgres?.volumes ?? []).map(String).find((volume) => volume.endsWith(':/docker-entrypoint-initdb.d:ro') || volume.endsWith(':/docker-entrypoint-initdb.d'));
    expect(initMount, 'postgres mounts postgres-init/ as /docker-entrypoint-initdb.d').toBeDefined();
    const initDir = `${COMPOSE_DIR}${(initMount ?? '').split(':')[0]}/`;
    const script = readFileSync(`${initDir}20-demo-tables.sh`, 'utf8');
    const problems: string[] = [];
    const databasesOf = (urls: (string | undefined)[]) => urls.filter((url): url is string => url !== undefined).map((url) => new URL(url).pathname.slice(1));
    const sources = databasesOf(composeInstances.filter((it) => it.app === 'reader').map((it) => it.env['SOURCE_DATABASE_URL']));
    const sinks = databasesOf(composeInstances.filter((it) => it.app === 'committer').map((it) => it.env['SINK_DATABASE_URL']));
    for (const database of sinks) {
      if (database !== 'postgres' && !script.includes(`CREATE DATABASE ${database}`)) problems.push(`no CREATE DATABASE ${database} (a committer's sink)`);
    }
    const loop = /for database in ([^;]+);/.exec(script)?.[1]?.trim().split(/\s+/) ?? [];
    for (const database of [...sources, ...sinks]) {
      if (!loop.includes(database)) problems.push(`database ${database} does not get the demo tables (the script creates them in: ${loop.join(', ')})`);
    }
    for (const reader of composeInstances.filter((it) => it.app === 'reader')) {
      for (const table of stringsOf(reader.config?.['TABLES'])) {
        if (!new RegExp(`CREATE TABLE ${table.replace('.', '\\.')}\\s*\\([^;]*PRIMARY KEY`, 's').test(script)) problems.push(`${reader.where}: table ${table} is not created with a primary key`);
      }
    }
    expect(problems).toEqual([]);
  });
});

// ───────────────────────────────────────── kubernetes

interface K8sObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; labels?: Record<string, string> };
  data?: Record<string, unknown>;
  stringData?: Record<string, unknown>;
  spec?: DeploymentSpec;
}
interface Probe {
  httpGet?: { path?: string; port?: number | string };
}
interface Container {
  name?: string;
  image?: string;
  ports?: { name?: string; containerPort?: number }[];
  envFrom?: { configMapRef?: { name?: string }; secretRef?: { name?: string }; prefix?: string }[];
  volumeMounts?: { name?: string; mountPath?: string; subPath?: string }[];
  env?: { name?: string; value?: unknown; valueFrom?: { configMapKeyRef?: { name?: string; key?: string }; secretKeyRef?: { name?: string; key?: string } } }[];
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  startupProbe?: Probe;
  resources?: { requests?: { cpu?: unknown; memory?: unknown }; limits?: { memory?: unknown } };
  securityContext?: { runAsNonRoot?: boolean };
}
interface DeploymentSpec {
  replicas?: number;
  strategy?: { type?: string };
  selector?: { matchLabels?: Record<string, string> };
  template?: {
    metadata?: { labels?: Record<string, string> };
    spec?: { terminationGracePeriodSeconds?: number; securityContext?: { runAsNonRoot?: boolean }; containers?: Container[]; volumes?: { name?: string; configMap?: { name?: string } }[] };
  };
}

const kustomization = parse(readFileSync(`${K8S_DIR}kustomization.yaml`, 'utf8')) as { namespace?: string; resources?: string[] };
const manifestFiles = kustomization.resources ?? [];
const manifestErrors: string[] = [];
const k8sObjects: (K8sObject & { file: string })[] = manifestFiles.flatMap((file) => {
  if (!existsSync(`${K8S_DIR}${file}`)) {
    manifestErrors.push(`kustomization.yaml lists ${file}, which does not exist`);
    return [];
  }
  return parseAllDocuments(readFileSync(`${K8S_DIR}${file}`, 'utf8')).flatMap((document) => {
    if (document.errors.length > 0) manifestErrors.push(`${file}: ${document.errors.map((error) => error.message).join('; ')}`);
    const object = document.toJS() as K8sObject | null;
    return object === null ? [] : [{ ...object, file }];
  });
});

function objectsOf(kind: string): Map<string, Record<string, string>> {
  const found = new Map<string, Record<string, string>>();
  for (const object of k8sObjects.filter((o) => o.kind === kind)) {
    const values: Record<string, string> = {};
    for (const [key, value] of Object.entries(object.data ?? {})) {
      if (typeof value === 'string') values[key] = kind === 'Secret' ? Buffer.from(value, 'base64').toString('utf8') : value;
      else manifestErrors.push(`${kind} ${object.metadata?.name}: ${key} is not a string`);
    }
    for (const [key, value] of Object.entries(object.stringData ?? {})) {
      if (typeof value === 'string') values[key] = value;
      else manifestErrors.push(`${kind} ${object.metadata?.name}: ${key} is not a string`);
    }
    found.set(object.metadata?.name ?? '', values);
  }
  return found;
}
const configMaps = objectsOf('ConfigMap');
const secrets = objectsOf('Secret');

const deployments = k8sObjects.filter((o) => o.kind === 'Deployment');
const k8sContainers = deployments.flatMap((deployment) =>
  (deployment.spec?.template?.spec?.containers ?? []).map((container) => ({
    deployment,
    container,
    app: appOfImage(container.image),
    where: `k8s Deployment "${deployment.metadata?.name}" container "${container.name}"`,
  })),
);

/** The container's environment as the kubelet builds it: envFrom in order, then env (which wins). */
function containerEnv(where: string, container: Container): { env: Record<string, string>; problems: string[] } {
  const env: Record<string, string> = {};
  const problems: string[] = [];
  const source = (kind: 'ConfigMap' | 'Secret', name: string | undefined) => (kind === 'ConfigMap' ? configMaps : secrets).get(name ?? '');
  for (const from of container.envFrom ?? []) {
    const [kind, name] = from.configMapRef ? (['ConfigMap', from.configMapRef.name] as const) : (['Secret', from.secretRef?.name] as const);
    const values = source(kind, name);
    if (values === undefined) problems.push(`${where}: envFrom ${kind} ${name} is not in the manifests`);
    for (const [key, value] of Object.entries(values ?? {})) env[`${from.prefix ?? ''}${key}`] = value;
  }
  for (const variable of container.env ?? []) {
    const name = variable.name ?? '';
    const ref = variable.valueFrom?.configMapKeyRef ?? variable.valueFrom?.secretKeyRef;
    if (ref) {
      const kind = variable.valueFrom?.configMapKeyRef ? 'ConfigMap' : 'Secret';
      const value = source(kind, ref.name)?.[ref.key ?? ''];
      if (value === undefined) problems.push(`${where}: ${name} refers to ${kind} ${ref.name} key ${ref.key}, which is not in the manifests`);
      else env[name] = value;
    } else if (typeof variable.value === 'string') {
      env[name] = variable.value;
    } else {
      problems.push(`${where}: ${name} must be a string (quote it: "${String(variable.value)}")`);
    }
  }
  return { env, problems };
}

/** A file mounted from a ConfigMap volume (`mountPath/<key>`), read from the manifests. */
function k8sMountedFile(deployment: K8sObject, container: Container, path: string): string | undefined {
  for (const mount of container.volumeMounts ?? []) {
    const dir = (mount.mountPath ?? '').replace(/\/$/, '');
    if (!path.startsWith(`${dir}/`)) continue;
    const volume = deployment.spec?.template?.spec?.volumes?.find((v) => v.name === mount.name);
    const text = configMaps.get(volume?.configMap?.name ?? '')?.[path.slice(dir.length + 1)];
    if (text !== undefined) return text;
  }
  return undefined;
}

const k8sInstances = k8sContainers.flatMap(({ deployment, container, app, where }) => {
  if (app === undefined) return [];
  const { env, problems } = containerEnv(where, container);
  return [instance(where, app, withFile(where, app, env, (path) => k8sMountedFile(deployment, container, path), problems), problems)];
});
const k8sInstanceOf = (where: string) => k8sInstances.find((it) => it.where === where);

describe('kubernetes (infra/k8s)', () => {
  it('every manifest kustomization.yaml lists exists and parses; all objects are in its namespace', () => {
    const problems = [...manifestErrors];
    for (const object of k8sObjects) {
      const namespace = object.kind === 'Namespace' ? object.metadata?.name : object.metadata?.namespace;
      if (namespace !== kustomization.namespace) problems.push(`${object.file}: ${object.kind} ${object.metadata?.name} is in namespace ${namespace}, not ${kustomization.namespace}`);
    }
    if (!k8sObjects.some((o) => o.kind === 'Namespace')) problems.push('no Namespace');
    expect(problems).toEqual([]);
  });

  it('runs every app, each container an image cdc-<app>', () => {
    const unknown = k8sContainers.filter((c) => c.app === undefined).map((c) => `${c.where}: image ${c.container.image} is not cdc-<app>`);
    expect(unknown).toEqual([]);
    expect(new Set(k8sInstances.map((it) => it.app))).toEqual(new Set(APP_NAMES));
  });

  it("every container's environment (ConfigMap + Secret + its env) passes its app's config schema", () => {
    expect(schemaProblems(k8sInstances)).toEqual([]);
  });

  it('every Deployment is a single Recreate pod whose selector matches its template', () => {
    const problems = deployments.flatMap((deployment) => {
      const where = `k8s Deployment "${deployment.metadata?.name}"`;
      const found: string[] = [];
      // One writer per slot / partition / sink: two pods at once would fence or interleave.
      if (deployment.spec?.replicas !== 1) found.push(`${where}: replicas ${deployment.spec?.replicas} (want 1)`);
      if (deployment.spec?.strategy?.type !== 'Recreate') found.push(`${where}: strategy ${deployment.spec?.strategy?.type} (want Recreate)`);
      const labels = deployment.spec?.template?.metadata?.labels ?? {};
      for (const [key, value] of Object.entries(deployment.spec?.selector?.matchLabels ?? { '(none)': '' })) {
        if (labels[key] !== value) found.push(`${where}: selector ${key}=${value} does not match the pod template's labels`);
      }
      return found;
    });
    expect(problems).toEqual([]);
  });

  it('every container listens for its probes and /metrics on the pod IP (HEALTH_HOST=0.0.0.0) and its pod is annotated for a Prometheus scrape of /metrics on HEALTH_PORT', () => {
    const problems = k8sContainers.flatMap(({ deployment, where }) => {
      const found: string[] = [];
      const it = k8sInstanceOf(where);
      if (it?.env['HEALTH_HOST'] !== '0.0.0.0') found.push(`${where}: HEALTH_HOST is ${it?.env['HEALTH_HOST'] ?? '(default: loopback)'}`);
      const annotations = (deployment.spec?.template?.metadata as { annotations?: Record<string, string> } | undefined)?.annotations ?? {};
      if (annotations['prometheus.io/scrape'] !== 'true' || annotations['prometheus.io/path'] !== '/metrics' || annotations['prometheus.io/port'] !== healthPortOf(it)) {
        found.push(`${where}: pod annotations do not ask for a scrape of /metrics on ${healthPortOf(it)}: ${JSON.stringify(annotations)}`);
      }
      return found;
    });
    expect(problems).toEqual([]);
  });

  it('every container has /healthz liveness and /readyz readiness probes on its HEALTH_PORT, 30 s to drain, and runs as non-root', () => {
    const problems = k8sContainers.flatMap(({ deployment, container, where }) => {
      const found: string[] = [];
      const healthPort = healthPortOf(k8sInstanceOf(where));
      const portOf = (port: number | string | undefined) =>
        typeof port === 'number' ? String(port) : String(container.ports?.find((p) => p.name === port)?.containerPort ?? `unknown port ${port}`);
      const probes = [
        ['livenessProbe', container.livenessProbe, '/healthz'],
        ['readinessProbe', container.readinessProbe, '/readyz'],
        ...(container.startupProbe ? [['startupProbe', container.startupProbe, '/healthz'] as const] : []),
      ] as const;
      for (const [name, probe, path] of probes) {
        if (probe?.httpGet?.path !== path) found.push(`${where}: ${name} is not an httpGet of ${path}`);
        else if (portOf(probe.httpGet.port) !== healthPort) found.push(`${where}: ${name} on port ${portOf(probe.httpGet.port)}, HEALTH_PORT is ${healthPort}`);
      }
      const pod = deployment.spec?.template?.spec;
      if ((pod?.terminationGracePeriodSeconds ?? 30) < 30) found.push(`${where}: terminationGracePeriodSeconds ${pod?.terminationGracePeriodSeconds} (want >= 30)`);
      if (container.securityContext?.runAsNonRoot !== true && pod?.securityContext?.runAsNonRoot !== true) found.push(`${where}: runAsNonRoot is not set`);
      if (container.resources?.requests?.cpu === undefined) found.push(`${where}: no cpu request`);
      return found;
    });
    expect(problems).toEqual([]);
  });

  it('every container caps its V8 heap (NODE_OPTIONS) below its memory limit, and requests what it is limited to', () => {
    const problems = k8sContainers.flatMap(({ container, where }) => {
      const limit = container.resources?.limits?.memory;
      const found = memoryProblems(where, k8sInstanceOf(where)?.env['NODE_OPTIONS'], quantityBytes(limit), limit);
      const request = quantityBytes(container.resources?.requests?.memory);
      if (request === undefined || request > (quantityBytes(limit) ?? 0)) found.push(`${where}: memory request ${String(container.resources?.requests?.memory)} is missing or above the limit ${String(limit)}`);
      return found;
    });
    expect(problems).toEqual([]);
  });

  it("the Deployments form one pipeline whose committers are exactly the reader's SINKS", () => {
    expect(pipelineProblems('k8s', k8sInstances)).toEqual([]);
  });
});

// ───────────────────────────────────────── Dockerfiles

describe('apps/<name>/Dockerfile', () => {
  it.each(APP_NAMES)('%s sets a NODE_OPTIONS heap cap in its runtime stage', (app) => {
    const dockerfile = readFileSync(`${ROOT}apps/${app}/Dockerfile`, 'utf8');
    const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
    const nodeOptions = /^ENV NODE_OPTIONS=(\S+)/m.exec(runtime)?.[1];
    expect(nodeOptions, `apps/${app}/Dockerfile runtime stage: ENV NODE_OPTIONS=--max-old-space-size=<MiB>`).toMatch(HEAP_CAP);
  });
});
