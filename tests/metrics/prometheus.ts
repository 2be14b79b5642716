/** A Prometheus text exposition, parsed enough for tests: series by name with their labels. */
export interface Series {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parseExposition(text: string): Series[] {
  const out: Series[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = LINE.exec(line);
    if (!match) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, name, value] of (match[2] ?? '').matchAll(LABEL)) labels[name as string] = (value as string).replace(/\\(.)/g, '$1');
    const raw = match[3] as string;
    out.push({ name: match[1] as string, labels, value: raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw) });
  }
  return out;
}

/** Sum of every series of `name` whose labels include `where`. */
export function total(series: readonly Series[], name: string, where: Readonly<Record<string, string>> = {}): number {
  return series.filter((s) => s.name === name && Object.entries(where).every(([k, v]) => s.labels[k] === v)).reduce((sum, s) => sum + s.value, 0);
}

export function find(series: readonly Series[], name: string, where: Readonly<Record<string, string>> = {}): Series[] {
  return series.filter((s) => s.name === name && Object.entries(where).every(([k, v]) => s.labels[k] === v));
}

export async function scrape(port: number): Promise<{ status: number; contentType: string | null; series: Series[] }> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  const text = await response.text();
  return { status: response.status, contentType: response.headers.get('content-type'), series: parseExposition(text) };
}
