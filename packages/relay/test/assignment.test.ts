import { describe, expect, it } from 'vitest';
import { parseAssignment } from '../src/assignment.ts';

describe('parseAssignment', () => {
  it('expands all and validates lists against the partition count', () => {
    expect(parseAssignment('all', 3)).toEqual({ partitions: [0, 1, 2] });
    expect(parseAssignment(' 2, 0 ,2', 3)).toEqual({ partitions: [0, 2] });
    expect(parseAssignment('3', 3)).toEqual({ problem: 'partition 3 is outside 0..2 (PARTITIONS=3)' });
    expect(parseAssignment('a', 3)).toMatchObject({ problem: expect.stringContaining("'a' is not a partition number") });
  });
});
