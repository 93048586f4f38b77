// The large-room layout's pure decisions (web/src/layout.js): constraints from what is visible,
// and where each tile goes given the server's forwarded set, the pin and the active speaker.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constraintsFor, placeTiles } from '../src/layout.js';

test('constraints follow the visible tiles, the user choice, the pin and audio-only', () => {
  const auto = constraintsFor({ audioOnly: false, width: 1280, height: 720, dpr: 1 });
  assert.equal(auto.lastN, 5 * 3); // 5 columns of 256 x 144 px, 3 rows in the grid's 60% of 720 px
  assert.equal(auto.maxHeight, 180); // 144 px thumbnails -> the 180p layer
  assert.deepEqual(auto.onStage, []);
  const hidpi = constraintsFor({ audioOnly: false, width: 1280, height: 720, dpr: 2 });
  assert.equal(hidpi.maxHeight, 360);
  assert.deepEqual(constraintsFor({ audioOnly: false, lastN: 2, pinned: 'p3' }).lastN, 2);
  assert.deepEqual(constraintsFor({ audioOnly: false, lastN: 2, pinned: 'p3' }).onStage, ['p3']);
  assert.equal(constraintsFor({ audioOnly: true, lastN: 4 }).lastN, 0);
  assert.equal(constraintsFor({ audioOnly: false, width: 8000, height: 8000 }).lastN, 25);
});

const cam = (id, extra = {}) => ({ participantId: id, kind: 'camera', hasVideo: true, cameraOff: false, ...extra });

test('forwarded videos go to the grid, the others become avatars', () => {
  const tiles = [cam('a'), cam('b'), cam('c'), cam('d', { cameraOff: true }), cam('e', { hasVideo: false })];
  const { places, stage } = placeTiles({ tiles, forwarded: ['a', 'b'], pinned: null, speaker: null, audioOnly: false });
  assert.equal(stage, null);
  assert.deepEqual(Object.fromEntries(places), { 'p:a': 'grid', 'p:b': 'grid', 'p:c': 'avatar', 'p:d': 'avatar', 'p:e': 'avatar' });
  // the server never sent forwarding-changed: everything with video is shown
  const all = placeTiles({ tiles, forwarded: null, pinned: null, speaker: null, audioOnly: false }).places;
  assert.equal(all.get('p:c'), 'grid');
  // audio-only: everyone is an avatar
  const audio = placeTiles({ tiles, forwarded: ['a', 'b'], pinned: null, speaker: null, audioOnly: true }).places;
  assert.ok([...audio.values()].every((p) => p === 'avatar'));
});

test('stage: the pin first, then a shared screen, then the active speaker', () => {
  const tiles = [cam('a'), cam('b'), cam('c'), { participantId: 'b', kind: 'screen', producerId: 's1', hasVideo: true }];
  let r = placeTiles({ tiles, forwarded: ['a', 'b', 'c'], pinned: 'c', speaker: 'a', audioOnly: false });
  assert.deepEqual(r.stage, { kind: 'camera', participantId: 'c' });
  assert.equal(r.places.get('p:c'), 'stage');
  assert.equal(r.places.get('screen:s1'), 'grid');
  r = placeTiles({ tiles, forwarded: ['a', 'b', 'c'], pinned: null, speaker: 'a', audioOnly: false });
  assert.equal(r.places.get('screen:s1'), 'stage');
  r = placeTiles({ tiles: tiles.slice(0, 3), forwarded: ['a', 'b', 'c'], pinned: null, speaker: 'a', audioOnly: false });
  assert.equal(r.places.get('p:a'), 'stage');
  // an active speaker whose video is not forwarded stays an avatar (no empty stage)
  r = placeTiles({ tiles: tiles.slice(0, 3), forwarded: ['b'], pinned: null, speaker: 'a', audioOnly: false });
  assert.equal(r.stage, null);
  assert.equal(r.places.get('p:a'), 'avatar');
});
