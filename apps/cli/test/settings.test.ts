import { describe, expect, test } from 'vitest';
import { SETTINGS, SettingsError, checkSettings } from '../src/settings.ts';

describe('checkSettings', () => {
  test('good settings pass', () => {
    expect(() =>
      checkSettings([SETTINGS.pipeline('cli_p-1'), SETTINGS.nats('nats://127.0.0.1:4222'), SETTINGS.sinkUrl('postgres://u:p@h:5432/db'), SETTINGS.sinkName('postgres')]),
    ).not.toThrow();
  });

  test('every bad setting is named by flag and variable at once, and no value is echoed', () => {
    let caught: unknown;
    try {
      checkSettings([SETTINGS.pipeline('bad name'), SETTINGS.nats('http://u:hunter2@h:1'), SETTINGS.sinkUrl('mysql://u:hunter2@h/db'), SETTINGS.sinkName('postgres')]);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(SettingsError);
    const error = caught as SettingsError;
    expect(error.code).toBe('CLI_BAD_SETTINGS');
    expect(error.problems.map((p) => p.setting)).toEqual(['--pipeline (PIPELINE)', '--nats (NATS_URL)', '--sink-url (SINK_DATABASE_URL)']);
    expect(error.message).toContain('must be a nats/tls URL');
    expect(error.message).toContain('must be a postgres/postgresql URL');
    expect(error.message).not.toContain('hunter2');
  });

  test('a missing required URL says what is expected', () => {
    expect(() => checkSettings([SETTINGS.sourceUrl(undefined)])).toThrow(/--source-url \(SOURCE_DATABASE_URL\): required, for example postgres:\/\//);
  });
});
