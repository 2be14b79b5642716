export { SOURCE_SCHEMA_SQL, SINK_SCHEMA_SQL, TABLES_SQL, WATCHED_TABLES } from './schema.ts';
export { runWorkload, writeNoise } from './workload.ts';
export type { WorkloadOptions, WorkloadResult } from './workload.ts';
export { verifySourceAgainstSink, verifySourcesAgainstSink } from './verify.ts';
export type { VerifyReport, TableDiff } from './verify.ts';
export { applyBenchSchema, runBenchWorkload } from './bench-workloads.ts';
export type { BenchRowShape, BenchWorkloadOptions, BenchWorkloadResult } from './bench-workloads.ts';
export { ManualClock, settle } from './manual-clock.ts';
