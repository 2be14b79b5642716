/**
 * The one redaction: every URL, credential, log field and error goes through here before
 * it is logged, thrown or served, so no secret leaves the process in text.
 *
 *   redactUrl('nats://app:s3cret@nats:4222')           → 'nats://app:***@nats:4222'
 *   redactText('connect postgres://u:pw@h/db?sslpassword=x failed') → '… postgres://u:***@h/db?sslpassword=*** …'
 *   registerSecret(config.NATS_PASSWORD)                 → that value is replaced wherever it appears
 *
 * Four layers, because a secret reaches text in four ways:
 *   1. userinfo in a URL (`scheme://user:pass@`, `redis://:pass@`; for nats/tls a lone
 *      `nats://token@` is a token) — the password (or token) becomes `***`;
 *   2. `key=value` pairs whose key names a secret (`password=`, `sslpassword=`, `token=`,
 *      `secret=`, …) in query strings and libpq conninfo strings, and `"password": "…"` in JSON;
 *   3. fields whose name is a credential (`password`, `NATS_PASSWORD`, `authToken`,
 *      `credentials`, …) — the whole value becomes `[redacted]` (redactValue);
 *   4. literal values registered as secrets (every credential the config loaded, every URL
 *      password) — replaced wherever they appear, whatever the format a library printed.
 */

const MASK = '***';
export const REDACTED = '[redacted]';

/**
 * A field (config key, log field, error context key) that holds a credential. Paths to
 * files (`NATS_CREDS_FILE`, `…_KEY_FILE`) are not secrets and stay visible.
 */
const SECRET_KEY = /(?:password|passwd|passphrase|secret|token|apikey|api_key|privatekey|private_key|credentials|sslkey|nkeyseed|nkey_seed|authorization)$/i;

export function isSecretKey(key: string): boolean {
  return SECRET_KEY.test(key);
}

/**
 * `scheme://user:password@` (also `scheme://:password@`). The password runs to the LAST `@`
 * before the path, as URL parsers read it: an unencoded `@` in a password is masked whole.
 */
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s/?#@:]*):([^\s/?#]*)@/gi;
/** `nats://token@` / `tls://token@`: NATS reads a lone user as a token. */
const NATS_TOKEN_USERINFO = /\b((?:nats|tls|wss?):\/\/)([^\s/?#@:]+)@/gi;
/** `password=…` in a query string or a conninfo string (`password=x host=y`, `'quoted'`). */
const KEY_VALUE_SECRET = /\b((?:ssl)?password|passwd|pwd|pass|secret|client_secret|(?:access_|auth_|refresh_|api_)?token|api_?key|sslkey)(\s*=\s*)('[^']*'|"[^"]*"|[^\s&;'",)]+)/gi;
/** `"password": "…"` in JSON text. */
const JSON_SECRET = /("(?:[A-Za-z_]*(?:password|passwd|secret|token|api_?key))"\s*:\s*)"(?:[^"\\]|\\.)*"/gi;

/** Literal secrets: each loaded credential, replaced wherever it appears (shorter ones would mask ordinary words). */
const MIN_SECRET_LENGTH = 4;
const secrets = new Set<string>();
let secretPattern: RegExp | undefined;

/** Remembers a secret value (and its URL-encoded form): redactText replaces it wherever it appears. */
export function registerSecret(value: string | undefined | null): void {
  if (typeof value !== 'string' || value.length < MIN_SECRET_LENGTH) return;
  const forms = [value, encodeURIComponent(value)];
  try {
    forms.push(decodeURIComponent(value));
  } catch {
    // not URL-encoded
  }
  let added = false;
  for (const form of forms) {
    if (form.length >= MIN_SECRET_LENGTH && !secrets.has(form)) {
      secrets.add(form);
      added = true;
    }
  }
  if (added) secretPattern = undefined;
}

/** Registers the password (or NATS token) a URL carries, if any. Comma lists too. */
export function registerUrlSecrets(urls: string): void {
  for (const url of urls.split(',')) {
    try {
      const parsed = new URL(url.trim());
      if (parsed.password) registerSecret(decodeURIComponent(parsed.password));
      else if (parsed.username && /^(nats|tls|wss?):$/.test(parsed.protocol)) registerSecret(decodeURIComponent(parsed.username));
      for (const [key, value] of parsed.searchParams) if (isSecretKey(key) || /^(ssl)?password$/i.test(key)) registerSecret(value);
    } catch {
      // not a URL: nothing to register
    }
  }
}

/** For tests: forget every registered secret. */
export function clearRegisteredSecrets(): void {
  secrets.clear();
  secretPattern = undefined;
}

function literalPattern(): RegExp | undefined {
  if (secrets.size === 0) return undefined;
  // Longest first, so a secret that contains another is replaced whole.
  secretPattern ??= new RegExp(
    [...secrets]
      .sort((a, b) => b.length - a.length)
      .map((secret) => secret.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
      .join('|'),
    'g',
  );
  return secretPattern;
}

/** Any text (a message, a stack, a log line) with every secret it carries masked. */
export function redactText(text: string): string {
  let out = text;
  if (out.includes('://')) {
    out = out.replace(URL_USERINFO, (_match, scheme: string, user: string, pass: string) => (pass === '' && user === '' ? `${scheme}@` : `${scheme}${user}:${MASK}@`));
    out = out.replace(NATS_TOKEN_USERINFO, (_match, scheme: string) => `${scheme}${MASK}@`);
  }
  if (out.includes('=')) out = out.replace(KEY_VALUE_SECRET, (_match, key: string, eq: string) => `${key}${eq}${MASK}`);
  if (out.includes('"')) out = out.replace(JSON_SECRET, (_match, head: string) => `${head}"${MASK}"`);
  const literal = literalPattern();
  if (literal) out = out.replace(literal, MASK);
  return out;
}

/**
 * One URL (or a comma list of them) with its password, NATS token and secret query
 * parameters masked; otherwise exactly as given (no re-serialization: no added `/`).
 */
export function redactUrl(url: string): string {
  return redactText(url);
}

/**
 * A value as it may be logged or served: strings through redactText, credential-named
 * fields replaced whole, Errors scrubbed in place (redactError), objects and arrays walked
 * (cycles and depth bounded). Returns a new object; the input is not changed (Errors aside).
 */
export function redactValue(value: unknown, key?: string, depth = 0, seen: WeakSet<object> = new WeakSet()): unknown {
  if (key !== undefined && isSecretKey(key) && value !== undefined && value !== null && value !== '') return REDACTED;
  if (typeof value === 'string') return redactText(value);
  if (typeof value !== 'object' || value === null) return value;
  if (value instanceof Error) return redactError(value);
  if (seen.has(value) || depth > 8) return value;
  seen.add(value);
  if (Array.isArray(value)) return value.map((item) => redactValue(item, undefined, depth + 1, seen));
  if (value instanceof Map) return new Map([...value].map(([k, v]) => [k, redactValue(v, typeof k === 'string' ? k : undefined, depth + 1, seen)]));
  if (value instanceof Date || ArrayBuffer.isView(value) || value instanceof ArrayBuffer) return value;
  const proto = Object.getPrototypeOf(value) as unknown;
  if (proto !== Object.prototype && proto !== null) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = redactValue(v, k, depth + 1, seen);
  return out;
}

const scrubbed = new WeakSet<Error>();

/**
 * Scrubs an error IN PLACE — message, stack, every own string field, its context and its
 * cause chain — and returns it: an error that wraps a connection failure may carry the
 * URL (with its password) in any of them. Idempotent and cheap on a second call.
 */
export function redactError<E extends Error>(error: E, depth = 0): E {
  if (scrubbed.has(error) && secrets.size === 0) return error;
  scrubbed.add(error);
  const target = error as unknown as Record<string, unknown>;
  for (const field of Object.getOwnPropertyNames(error)) {
    if (field === 'cause' || field === 'errors') continue;
    const value = target[field];
    let next: unknown = value;
    if (isSecretKey(field) && value !== undefined && value !== null && value !== '') next = REDACTED;
    else if (typeof value === 'string') next = redactText(value);
    else if (typeof value === 'object' && value !== null && !(value instanceof Error)) next = redactValue(value, undefined, 1);
    if (next === value) continue;
    try {
      Object.defineProperty(error, field, { value: next, writable: true, configurable: true, enumerable: Object.prototype.propertyIsEnumerable.call(error, field) });
    } catch {
      // a frozen or non-configurable field: leave it
    }
  }
  if (depth < 8) {
    const cause = (error as { cause?: unknown }).cause;
    if (cause instanceof Error) redactError(cause, depth + 1);
    const errors = (error as { errors?: unknown }).errors;
    if (Array.isArray(errors)) for (const inner of errors) if (inner instanceof Error) redactError(inner, depth + 1);
  }
  return error;
}
