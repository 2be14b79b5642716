/** An app's /readyz as a test reads it: the status and the per-check body. */
export interface Readiness {
  readonly ready: boolean;
  readonly checks: Readonly<Record<string, { ok: boolean; detail?: string }>>;
}

export async function readyz(port: number): Promise<{ status: number; body: Readiness }> {
  const response = await fetch(`http://127.0.0.1:${port}/readyz`);
  return { status: response.status, body: (await response.json()) as Readiness };
}
