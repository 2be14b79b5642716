/**
 * Which partitions one process runs. Every middle stage process may run several
 * partitions, each with its own relay: `ASSIGNED_PARTITIONS=all` or `0,3,5`.
 */
export type Assignment = { readonly problem: string } | { readonly partitions: readonly number[] };

export function parseAssignment(text: string, partitions: number): Assignment {
  const value = text.trim();
  if (value === '' || value === 'all') return { partitions: Array.from({ length: partitions }, (_, p) => p) };
  const chosen = new Set<number>();
  for (const item of value.split(',').map((part) => part.trim())) {
    if (!/^\d+$/.test(item)) return { problem: `'${item}' is not a partition number (use 'all' or a list like 0,1)` };
    const p = Number(item);
    if (p >= partitions) return { problem: `partition ${p} is outside 0..${partitions - 1} (PARTITIONS=${partitions})` };
    chosen.add(p);
  }
  if (chosen.size === 0) return { problem: "empty: use 'all' or a list like 0,1" };
  return { partitions: [...chosen].sort((a, b) => a - b) };
}
