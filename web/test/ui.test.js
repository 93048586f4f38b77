// The avatar initials of a display name (ui.js), under Node's test runner (no DOM needed).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { initials } from '../src/ui.js';

test('one-word names get one letter, longer names the first two words', () => {
  assert.equal(initials('Ada'), 'A');
  assert.equal(initials('  ada  '), 'A');
  assert.equal(initials('Ada Lovelace'), 'AL');
  assert.equal(initials('Ada King Lovelace'), 'AK');
});

test('punctuation, emoji and other scripts', () => {
  assert.equal(initials('(Ada)'), 'A');
  assert.equal(initials('élodie durand'), 'ÉD');
  assert.equal(initials('李小龙'), '李');
  assert.equal(initials('🎉 Bob'), 'B');
  assert.equal(initials('🎉'), '?');
  assert.equal(initials(''), '?');
  assert.equal(initials(null), '?');
});
