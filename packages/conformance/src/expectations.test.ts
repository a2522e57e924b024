import { describe, expect, it } from 'vitest';
import { expectationFor, expectationKey, validateExpectations } from './expectations.js';
import type { Expectations } from './expectations.js';

describe('expectations', () => {
  const exp: Expectations = {
    'hmm.anon_read': { expect: 'fail', reason: 'every variant' },
    'hmm.anon_read [device-coherent]': { expect: 'skip', reason: 'coherent only' },
  };

  it('looks up the variant key first, then the bare id', () => {
    expect(expectationKey('hmm.migrate', 'device-private')).toBe('hmm.migrate [device-private]');
    expect(expectationFor(exp, 'hmm.anon_read', 'device-coherent')).toEqual({
      expect: 'skip',
      reason: 'coherent only',
    });
    expect(expectationFor(exp, 'hmm.anon_read', 'device-private')).toEqual({
      expect: 'fail',
      reason: 'every variant',
    });
    expect(expectationFor(exp, 'hmm.anon_write', 'device-private')).toBeNull();
    expect(expectationFor(undefined, 'hmm.anon_read', 'device-private')).toBeNull();
  });

  it('accepts valid expectations and rejects stale or malformed ones, naming the entry', () => {
    expect(() => validateExpectations(exp)).not.toThrow();
    expect(() => validateExpectations({})).not.toThrow();
    expect(() => validateExpectations({ 'hmm.nope': { expect: 'fail', reason: 'x' } })).toThrow(
      "expectation 'hmm.nope' names no case",
    );
    expect(() =>
      validateExpectations({ 'hmm.anon_read [device-shiny]': { expect: 'fail', reason: 'x' } }),
    ).toThrow('names no case');
    // The p2p cases run in the device-private variant only.
    expect(() =>
      validateExpectations({ 'p2p.map_read [device-coherent]': { expect: 'skip', reason: 'x' } }),
    ).toThrow('p2p.map_read does not run in device-coherent');
    expect(() => validateExpectations({ 'hmm.anon_read': { expect: 'pass', reason: 'x' } })).toThrow(
      "must be { expect: 'fail' | 'skip', reason: '<why>' }",
    );
    expect(() => validateExpectations({ 'hmm.anon_read': { expect: 'fail', reason: ' ' } })).toThrow(
      'must be {',
    );
    expect(() => validateExpectations({ 'hmm.anon_read': 'fail' })).toThrow('must be {');
    expect(() => validateExpectations(['hmm.anon_read'])).toThrow('must be an object');
    expect(() => validateExpectations(null)).toThrow('must be an object');
  });
});
