/**
 * committer — deduped.<p> (every partition) → the sink, exactly once. The wiring is in
 * ./app.ts; this entry point runs it with no hooks (the bundle holds no test failpoint).
 */
import { runCommitter } from './app.ts';

await runCommitter();
