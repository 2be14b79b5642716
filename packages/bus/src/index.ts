/**
 * @cdc/bus — JetStream the way every stage uses it.
 *
 *   const bus = await Bus.create({ url, name: 'reader', logger });
 *   // credentials and TLS: from the URL (nats://user:pass@host) or @cdc/runtime natsSecurity(config)
 *   const secure = await Bus.create({ url: 'tls://nats:4222', name: 'reader', logger, security: { user, password, tls: { caFile } } });
 *   await bus.ensurePipelineStreams('orders');
 *   const publisher = bus.publisher({ maxInFlight: 256 });
 *   await publisher.publish('cdc.orders.raw.0', event, { msgId: event.eventId });
 */
export { Bus, DEFAULT_STREAM_SETTINGS } from './bus.ts';
export { natsTarget, natsConnectError } from './connect.ts';
export type { NatsTarget } from './connect.ts';
export type { StreamSettings } from './bus.ts';
export { AckedPublisher } from './publisher.ts';
export type { PublishOptions } from './publisher.ts';
export { StreamReader } from './reader.ts';
export type { BusMessage } from './message.ts';
export { PublishError, StreamGapError } from './errors.ts';
export { PipelineAgreement, PipelineMismatchError, compareViews, instanceKey, AGREEMENT_DEFAULTS } from './agreement.ts';
export type { PipelineView } from './agreement.ts';
