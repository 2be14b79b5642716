/**
 * @cdc/sink-kafka — the committer's Kafka sink: deduped.<p> → Kafka topics, exactly once.
 */
export {};
