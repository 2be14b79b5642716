/**
 * The deployment files against their published schemas, not only parsed:
 *  - infra/compose/docker-compose.yml against the Compose Specification's JSON schema (the
 *    one compose-go, docker compose's loader, ships; fetched by infra/validators/fetch.sh);
 *  - every manifest of infra/k8s against Kubernetes' OpenAPI definitions, through the
 *    validators of the npm package kubernetes-models (generated from them; it knows
 *    resource.k8s.io/v1, so a 1.34-or-later API set).
 * A planted mistake is caught by each (the control cases), so a check that cannot fail
 * would show.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const COMPOSE_SCHEMA = `${ROOT}.state/validators/compose-spec.json`;
const K8S_DIR = `${ROOT}infra/k8s/`;

function composeValidator(): (document: unknown) => string[] {
  const ajv = new Ajv2020({ allErrors: true, strict: false, validateFormats: false });
  const validate = ajv.compile(JSON.parse(readFileSync(COMPOSE_SCHEMA, 'utf8')) as object);
  return (document) => (validate(document) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? ''}`));
}

/** The kubernetes-models class for apiVersion + kind (`apps/v1` Deployment → kubernetes-models/apps/v1/Deployment). */
async function k8sModel(apiVersion: string, kind: string): Promise<(new (data: unknown) => { validate(): void }) | undefined> {
  const path = apiVersion.includes('/') ? apiVersion : `v1`;
  const module = (await import(/* @vite-ignore */ `kubernetes-models/${path}/${kind}`).catch(() => undefined)) as Record<string, unknown> | undefined;
  return module?.[kind] as (new (data: unknown) => { validate(): void }) | undefined;
}

async function k8sProblems(document: { apiVersion?: string; kind?: string }): Promise<string[]> {
  if (document.kind === 'Kustomization') return [];
  const Model = await k8sModel(document.apiVersion ?? '', document.kind ?? '');
  if (Model === undefined) return [`no Kubernetes schema for ${document.apiVersion}/${document.kind}`];
  try {
    new Model(document).validate();
    return [];
  } catch (error) {
    return [String(error instanceof Error ? error.message : error)];
  }
}

function manifests(): { file: string; document: Record<string, unknown> }[] {
  return readdirSync(K8S_DIR)
    .filter((name) => name.endsWith('.yaml') && name !== 'kustomization.yaml')
    .flatMap((name) =>
      parseAllDocuments(readFileSync(`${K8S_DIR}${name}`, 'utf8'))
        .map((doc) => doc.toJS() as Record<string, unknown> | null)
        .filter((document): document is Record<string, unknown> => document !== null)
        .map((document) => ({ file: name, document })),
    );
}

describe('deployment files against their schemas', () => {
  it.skipIf(!existsSync(COMPOSE_SCHEMA))('docker-compose.yml follows the Compose Specification; a planted mistake is caught', () => {
    const validate = composeValidator();
    // merge: docker compose resolves YAML merge keys (<<: *anchor) before validating.
    const compose = parse(readFileSync(`${ROOT}infra/compose/docker-compose.yml`, 'utf8'), { merge: true }) as { services: Record<string, Record<string, unknown>> };
    expect(validate(compose)).toEqual([]);
    const first = Object.keys(compose.services)[0] as string;
    const broken = { ...compose, services: { ...compose.services, [first]: { ...compose.services[first], restart: 42, helthcheck: {} } } };
    expect(validate(broken).length).toBeGreaterThan(0);
  });

  it('every Kubernetes manifest validates against the API schemas; a planted mistake is caught', async () => {
    const all = manifests();
    expect(all.length).toBeGreaterThan(5);
    const problems: string[] = [];
    for (const { file, document } of all) {
      for (const problem of await k8sProblems(document)) problems.push(`${file} ${String(document.kind)} ${String((document.metadata as { name?: string } | undefined)?.name)}: ${problem}`);
    }
    expect(problems).toEqual([]);
    const deployment = all.find(({ document }) => document.kind === 'Deployment' || document.kind === 'StatefulSet')?.document;
    expect(deployment).toBeDefined();
    const spec = (deployment as { spec: { replicas?: unknown } }).spec;
    expect(await k8sProblems({ ...(deployment as object), spec: { ...spec, replicas: 'three' } } as never)).not.toEqual([]);
  });
});
