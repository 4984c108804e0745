"""Tests of the generator's feedback knobs: a skip moves the session, a genre request moves it,
recommendations include disliked songs; all four off reproduce the generator without them."""

import hashlib

import numpy as np
import pytest

from contract import settings
from datagen import generate as generate_lib
from datagen import model
from datagen.random_streams import Streams

FEEDBACK_OFF = dict(skip_ends_session=0.0, skip_leaves_genre=0.0, genre_request_switch=0.0,
                    recommend_disliked=0.0)
# sha256 of plays-00000-of-00001.csv generated before the feedback knobs existed (main 7c11949)
# with num_events=6000, num_users=60, num_items=600, seed=7 (and 11): the knobs at 0 must give
# these bytes.
BEFORE_FEEDBACK_SHA256 = {
    7: 'a88897993b34ba9709a2e0c44e76a58c3e126ce4ac7f2b017b1b0d52177c3c51',
    11: '94d89cba8e433a102aa63c50f7460e7f28ffa111364f38f6beba1ef319a934d8',
}


@pytest.mark.parametrize('seed', sorted(BEFORE_FEEDBACK_SHA256))
def test_feedback_off_gives_the_bytes_of_the_generator_before_it(tmp_path, seed):
  summary = generate_lib.generate(str(tmp_path / 'log'), num_events=6_000, num_users=60,
                                  num_items=600, seed=seed, progress=False, **FEEDBACK_OFF)
  with open(summary['files'][0], 'rb') as f:
    assert hashlib.sha256(f.read()).hexdigest() == BEFORE_FEEDBACK_SHA256[seed]


def _plays(**knobs):
  config = model.GeneratorConfig(num_events=40_000, num_users=300, num_items=3_000, seed=5,
                                 **knobs)
  config.validate()
  streams = Streams(config.seed)
  catalogue = model.make_catalogue(config, streams)
  users = model.make_users(config, streams, catalogue)
  return users, model.generate_chunk(config, streams, catalogue, users, 0, config.num_users)


def _after(plays):
  """Masks over consecutive pairs of one user's plays: (same user, previous was a skip)."""
  same_user = plays['user'][1:] == plays['user'][:-1]
  skipped = plays['play_rate'][:-1] <= settings.NEG_THRESHOLD
  return same_user, skipped


def test_a_skip_ends_the_session_or_leaves_its_genre():
  for knobs, ends, leaves in ((dict(skip_ends_session=0.3, skip_leaves_genre=0.5), 0.3, 0.5),
                              (FEEDBACK_OFF, 0.0, 0.0)):
    _, plays = _plays(**knobs)
    same_user, skipped = _after(plays)
    start = plays['session_start'][1:]
    moved = plays['session_slot'][1:] != plays['session_slot'][:-1]
    base = 1 / 12.0  # mean_session_length: sessions start at random
    after_skip = same_user & skipped
    expected_start = base + (1 - base) * ends
    assert abs(start[after_skip].mean() - expected_start) < 0.03, knobs
    assert abs(start[same_user & ~skipped].mean() - base) < 0.01
    # Inside a session, a skip moves it to another liked genre with skip_leaves_genre (plus the
    # genre requests' own switches, which are off here only with FEEDBACK_OFF).
    in_session = ~start & same_user & (plays['intent'][1:] != model.INTENT_GENRE_REQUEST)
    assert abs(moved[in_session & skipped].mean() - leaves) < 0.04, knobs
    assert moved[in_session & ~skipped].mean() == 0


def test_the_time_gap_tells_whether_a_play_starts_a_session():
  # What the oracle relies on: a session start is visible in the log, skip-ended ones included.
  _, plays = _plays()
  same_user, _ = _after(plays)
  # Inside a session plays are at most a song (6 min) and 10 s apart; sessions 30 min or more.
  gap = np.diff(plays['ts'])
  np.testing.assert_array_equal((gap >= 30 * 60_000)[same_user],
                                plays['session_start'][1:][same_user])


def test_a_genre_request_moves_the_session_and_the_plays_after_it_follow():
  _, plays = _plays(genre_request_switch=0.5)
  same_user, _ = _after(plays)
  request = (plays['intent'][1:] == model.INTENT_GENRE_REQUEST) & same_user
  in_session = ~plays['session_start'][1:]
  moved = plays['session_slot'][1:] != plays['session_slot'][:-1]
  assert abs(moved[request & in_session].mean() - 0.5) < 0.05
  # The next play stays in the requested genre (same slot), unless something else moves it.
  followed = (plays['session_slot'][2:] == plays['session_slot'][1:-1])[
      (request & in_session & moved)[:-1] & same_user[1:] & ~plays['session_start'][2:]]
  assert followed.mean() > 0.7
  _, plays = _plays(**FEEDBACK_OFF)
  request = (plays['intent'][1:] == model.INTENT_GENRE_REQUEST) & _after(plays)[0]
  moved = plays['session_slot'][1:] != plays['session_slot'][:-1]
  assert moved[request & ~plays['session_start'][1:]].mean() == 0


def test_recommendations_include_the_users_disliked_songs():
  def disliked_shares(**knobs):
    users, plays = _plays(**knobs)
    recommend = plays['intent'] == model.INTENT_RECOMMEND
    disliked_song = (users.disliked_items[plays['user']] == plays['item'][:, None]).any(axis=1)
    return disliked_song[recommend].mean(), disliked_song[~recommend].mean()
  # Disliked songs are popular ones, so global hits hit them anyway; the knob adds its share.
  by_chance, asked_for = disliked_shares(**FEEDBACK_OFF)
  with_knob, _ = disliked_shares(recommend_disliked=0.1)
  assert asked_for < 0.05  # elsewhere only by chance, as hits of a requested genre
  assert abs(with_knob - (0.1 + 0.9 * by_chance)) < 0.02, (with_knob, by_chance)


def test_slots_compose_the_transitions_of_each_user_in_order():
  # Two users; transitions map the previous play's slot (column) to this play's slot.
  position = np.array([0, 1, 2, 3, 0, 1])
  transitions = np.array([[1, 1], [0, 1], [1, 0], [0, 0],  # user 0: 1 -> keep 1 -> swap -> 0
                          [0, 0], [1, 0]])  # user 1: 0 -> swap -> 1
  slots = model._slots_from_transitions(transitions, position)  # pylint: disable=protected-access
  np.testing.assert_array_equal(slots, [1, 1, 0, 0, 0, 1])


def test_slots_match_a_play_by_play_loop():
  rng = np.random.default_rng(0)
  counts = rng.integers(1, 40, size=30)
  position = np.concatenate([np.arange(c) for c in counts])
  transitions = rng.integers(0, 3, size=(len(position), 3))
  expected = np.empty(len(position), np.int64)
  for row, p in enumerate(position):
    expected[row] = transitions[row, 0 if p == 0 else expected[row - 1]]
  slots = model._slots_from_transitions(transitions, position)  # pylint: disable=protected-access
  np.testing.assert_array_equal(slots, expected)


def test_other_slot_never_returns_the_current_one_and_follows_the_weights():
  weights = np.array([[0.5, 0.3, 0.2]] * 3)
  shares = model.other_slot_shares(weights)
  np.testing.assert_allclose(shares[0], [[0, 0.6, 0.4], [0.5 / 0.7, 0, 0.2 / 0.7],
                                         [0.5 / 0.8, 0.3 / 0.8, 0]])
  u = np.array([0.0, 0.59, 0.999999])
  drawn = model._other_slot(weights, u)  # pylint: disable=protected-access
  np.testing.assert_array_equal(drawn[:, 0], [1, 1, 2])
  np.testing.assert_array_equal(drawn[:, 1], [0, 0, 2])
  np.testing.assert_array_equal(drawn[:, 2], [0, 0, 1])


@pytest.mark.parametrize('knob', sorted(FEEDBACK_OFF))
def test_feedback_knobs_are_validated(knob):
  with pytest.raises(ValueError, match=f'{knob} must be in'):
    model.GeneratorConfig(**{knob: 1.5}).validate()
  with pytest.raises(ValueError, match='needs disliked_items_per_user'):
    model.GeneratorConfig(disliked_items_per_user=0, recommend_disliked=0.1).validate()
