/**
 * Unique names for per-test resources (tables, slots, publications, streams, topics,
 * key prefixes). Tests never share a fixed name, so reruns and leftovers of a crashed
 * run cannot collide.
 */
import { randomBytes } from 'node:crypto';

/** PostgreSQL identifiers (and so slot names) are cut at 63 bytes (NAMEDATALEN - 1). */
const MAX_LENGTH = 63;

/**
 * `prefix_<time base36>_<8 random hex>`: only `[a-z0-9_]`, starts with a letter, at most
 * 63 characters. Valid unquoted as a PostgreSQL identifier and replication slot name,
 * a JetStream stream name, a Kafka topic, a Redis or etcd key segment.
 */
export function uniqueName(prefix = 't'): string {
  const clean = prefix.toLowerCase().replace(/[^a-z0-9_]+/g, '_').replace(/^_+|_+$/g, '');
  const head = /^[a-z]/.test(clean) ? clean : `t_${clean}`.replace(/_+$/, '');
  const suffix = `${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
  return `${head.slice(0, MAX_LENGTH - suffix.length - 1)}_${suffix}`;
}
