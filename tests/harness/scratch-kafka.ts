/**
 * A Kafka broker of a test's own (KRaft, one node), for tests that stop and restart the
 * broker: the shared one must stay up for every other test. It runs from the jars that
 * infra/local/servers.sh fetched from Maven Central (`.state/kafka/libs`), on loopback
 * ports and a data directory of its own, and is stopped (then deleted) with the context.
 *
 *   const broker = await ScratchKafka.start(ctx);   // broker.brokers → ['127.0.0.1:<port>']
 *   await broker.stop();  await broker.start();     // a restart keeps the data directory
 *
 * With `saslSsl` it also listens on a SASL_SSL port (`broker.secureBrokers`): TLS with the
 * given PEM key and certificate, SCRAM-SHA-512 users created at format time (KIP-900).
 * The PLAINTEXT listener stays for the broker's own use and the test's admin.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ManagedProcess } from './process.ts';
import type { TestContext } from './context.ts';
import { freePorts } from './ports.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const LIBS = join(ROOT, '.state', 'kafka', 'libs');
const READY = /Kafka Server started|KafkaRaftServer.*started|\[KafkaServer id=\d+\] started/;

/** Whether this machine has the jars (a local-servers run); otherwise tests needing it skip. */
export function scratchKafkaAvailable(): boolean {
  return existsSync(LIBS);
}


export interface SaslSslListener {
  /** PEM private key (unencrypted PKCS#8) followed by the certificate chain. */
  readonly keyAndCertificatePem: string;
  readonly users: readonly { readonly name: string; readonly password: string }[];
}

export class ScratchKafka {
  readonly port: number;
  readonly securePort: number | undefined;
  readonly #controllerPort: number;
  readonly #dir: string;
  readonly #saslSsl: SaslSslListener | undefined;
  #process: ManagedProcess | undefined;
  #starts = 0;

  private constructor(port: number, controllerPort: number, dir: string, saslSsl?: { port: number; listener: SaslSslListener }) {
    this.port = port;
    this.#controllerPort = controllerPort;
    this.#dir = dir;
    this.securePort = saslSsl?.port;
    this.#saslSsl = saslSsl?.listener;
  }

  static async start(ctx: TestContext, options: { saslSsl?: SaslSslListener } = {}): Promise<ScratchKafka> {
    const dir = mkdtempSync(join(tmpdir(), 'cdc-scratch-kafka-'));
    // Distinct ports: a broker whose listener and controller got the same one cannot start.
    const [port, controllerPort, securePort] = await freePorts(3);
    const secure = options.saslSsl ? { port: securePort as number, listener: options.saslSsl } : undefined;
    const broker = new ScratchKafka(port as number, controllerPort as number, dir, secure);
    ctx.defer('scratch kafka', async () => {
      await broker.stop();
      rmSync(dir, { recursive: true, force: true });
    });
    broker.#writeConfig();
    await broker.#format();
    await broker.start();
    return broker;
  }

  get brokers(): string[] {
    return [`127.0.0.1:${this.port}`];
  }

  /** The SASL_SSL listener's address (only with `saslSsl`). */
  get secureBrokers(): string[] {
    if (this.securePort === undefined) throw new Error('this scratch broker has no SASL_SSL listener');
    return [`127.0.0.1:${this.securePort}`];
  }

  /** Starts (or restarts) the broker on the same data directory; resolves when it serves. */
  async start(): Promise<void> {
    this.#starts += 1;
    this.#process = ManagedProcess.spawn({
      name: `scratch-kafka-${this.#starts}`,
      command: 'java',
      args: [
        '-Xmx384m',
        '-Xms128m',
        '-XX:+UseG1GC',
        `-Dlog4j.configuration=file:${join(this.#dir, 'log4j.properties')}`,
        '-cp',
        `${LIBS}/*`,
        'kafka.Kafka',
        join(this.#dir, 'server.properties'),
      ],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' },
    });
    await this.#process.waitForLine(READY, 120_000);
  }

  /** SIGTERM (a clean broker shutdown), bounded, then SIGKILL. */
  async stop(): Promise<void> {
    await this.#process?.stop(30_000);
    this.#process = undefined;
  }

  #writeConfig(): void {
    const secure = this.#saslSsl;
    if (secure) writeFileSync(join(this.#dir, 'server.pem'), secure.keyAndCertificatePem, { mode: 0o600 });
    const secureListener = secure ? `,SASL_SSL://127.0.0.1:${this.securePort}` : '';
    writeFileSync(
      join(this.#dir, 'server.properties'),
      [
        'process.roles=broker,controller',
        'node.id=1',
        `controller.quorum.voters=1@127.0.0.1:${this.#controllerPort}`,
        `listeners=PLAINTEXT://127.0.0.1:${this.port},CONTROLLER://127.0.0.1:${this.#controllerPort}${secureListener}`,
        `advertised.listeners=PLAINTEXT://127.0.0.1:${this.port}${secureListener}`,
        'controller.listener.names=CONTROLLER',
        'inter.broker.listener.name=PLAINTEXT',
        `listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT${secure ? ',SASL_SSL:SASL_SSL' : ''}`,
        ...(secure
          ? [
              'sasl.enabled.mechanisms=SCRAM-SHA-512',
              'listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;',
              'ssl.keystore.type=PEM',
              `ssl.keystore.location=${join(this.#dir, 'server.pem')}`,
              'ssl.client.auth=none',
            ]
          : []),
        `log.dirs=${join(this.#dir, 'data')}`,
        'num.partitions=1',
        'offsets.topic.replication.factor=1',
        'transaction.state.log.replication.factor=1',
        'transaction.state.log.min.isr=1',
        'group.initial.rebalance.delay.ms=0',
        '',
      ].join('\n'),
    );
    // To stdout, where ManagedProcess sees the readiness line.
    writeFileSync(
      join(this.#dir, 'log4j.properties'),
      [
        'log4j.rootLogger=INFO, stdout',
        'log4j.appender.stdout=org.apache.log4j.ConsoleAppender',
        'log4j.appender.stdout.layout=org.apache.log4j.PatternLayout',
        'log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n',
        'log4j.logger.kafka=INFO',
        'log4j.logger.org.apache.kafka=WARN',
        'log4j.logger.kafka.log=WARN',
        'log4j.logger.state.change.logger=WARN',
        '',
      ].join('\n'),
    );
  }

  async #format(): Promise<void> {
    const clusterId = randomBytes(16).toString('base64url');
    const format = ManagedProcess.spawn({
      name: 'scratch-kafka-format',
      command: 'java',
      args: [
        '-Xmx256m',
        `-Dlog4j.configuration=file:${join(this.#dir, 'log4j.properties')}`,
        '-cp',
        `${LIBS}/*`,
        'kafka.tools.StorageTool',
        'format',
        '--config',
        join(this.#dir, 'server.properties'),
        '--cluster-id',
        clusterId,
        ...(this.#saslSsl?.users.flatMap((user) => ['--add-scram', `SCRAM-SHA-512=[name=${user.name},password=${user.password}]`]) ?? []),
      ],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' },
    });
    const status = await format.waitForExit(60_000);
    if (status.code !== 0) throw new Error(`kafka storage format failed (${JSON.stringify(status)}):\n${format.stdout.slice(-20).join('\n')}\n${format.stderr.slice(-20).join('\n')}`);
  }
}
