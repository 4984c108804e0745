"""Tests of the generator's oracle: its law's mass, its calibration, and its ranks."""

import math
import os

import numpy as np
import pandas as pd
import pytest

from contract import settings
from datagen import generate as generate_lib
from datagen import model
from datagen import oracle as oracle_lib
from evaluation import baselines

EVAL_PLAYS_PER_USER = 3


def _log(tmp_path_factory, **knobs):
  out_dir = str(tmp_path_factory.mktemp('log'))
  summary = generate_lib.generate(out_dir, num_events=24_000, num_users=240, num_items=2_000,
                                  seed=4, progress=False, **knobs)
  plays = pd.read_csv(summary['files'][0])
  plays['positive'] = plays['play_ms'] / plays['duration_ms'] >= settings.POS_THRESHOLD
  last = plays.groupby('user_id').tail(EVAL_PLAYS_PER_USER)
  train = plays.drop(last.index)
  # The vocabulary as Transform orders it: by descending train plays (ties by id).
  counts = train['item_id'].value_counts()
  vocabulary = sorted(counts.index, key=lambda item: (-counts[item], item))
  return out_dir, plays, last, [v.encode() for v in vocabulary]


@pytest.fixture(scope='module', params=['feedback on', 'feedback off'])
def log(request, tmp_path_factory):
  knobs = {} if request.param == 'feedback on' else dict(
      skip_ends_session=0.0, skip_leaves_genre=0.0, genre_request_switch=0.0,
      recommend_disliked=0.0)
  return _log(tmp_path_factory, **knobs)


def _ids(frame, column):
  return [v.encode() for v in frame[column]]


def test_ranks_count_strictly_higher_scores_and_oov_is_never_a_hit():
  scores = np.array([[3.0, 1.0, 3.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
  np.testing.assert_array_equal(oracle_lib.ranks_from_scores(scores, np.array([2, 4])), [0, 4])
  np.testing.assert_array_equal(oracle_lib.ranks_from_scores(scores, np.array([1, 0])), [2, 3])


def test_positive_probabilities_by_affinity_by_hand():
  config = model.GeneratorConfig()
  liked = 0.95 * (1 - math.exp(-0.2 / 0.03)) + 0.05 * (1 - 0.8 / 0.9)
  assert oracle_lib.positive_probability_liked(config, 0.8) == pytest.approx(liked)
  # Neutral mean 0.6, sd 0.2: P(N > 1) = 0.158655.
  neutral = oracle_lib.positive_probability_neutral(config, np.array([0.6]), 0.8)
  np.testing.assert_allclose(neutral, [0.158655], atol=1e-6)
  # Disliked: only tolerated plays (5 %) can be played through (skips stop below 0.3).
  np.testing.assert_allclose(
      oracle_lib.positive_probability_disliked(config, neutral, 0.8), 0.05 * neutral)


def test_popularity_equivalent_reproduces_the_most_popular_baseline(log):
  out_dir, _, last, vocabulary = log
  ranks = oracle_lib.popularity_equivalent_ranks(
      out_dir, _ids(last, 'user_id'), last['ts'], _ids(last, 'item_id'), vocabulary)
  position = {item: v for v, item in enumerate(vocabulary)}
  target_ids = [position.get(item, len(vocabulary)) for item in _ids(last, 'item_id')]
  np.testing.assert_array_equal(ranks, baselines.popularity_ranks(target_ids, len(vocabulary)))


def test_predicted_positive_share_matches_the_log(log):
  out_dir, plays, _, _ = log
  shares = oracle_lib.predicted_positive_shares(out_dir, _ids(plays, 'user_id'), plays['ts'])
  error = math.sqrt(np.sum(shares * (1 - shares))) / len(shares)
  assert abs(shares.mean() - plays['positive'].mean()) < 3 * error, (
      shares.mean(), plays['positive'].mean(), error)


def test_the_law_is_calibrated_on_its_top_items(log):
  # Expected hits of the oracle's top 10 (its own probabilities summed) against the hits seen.
  out_dir, plays, _, _ = log
  oracle = oracle_lib.Oracle(out_dir)
  sample = plays.iloc[::4]
  states = oracle.states(_ids(sample, 'user_id'), sample['ts'])
  expected, seen = 0.0, 0
  positive = sample['positive'].to_numpy()
  for batch, scores in oracle.next_positive_scores(states, np.arange(oracle.config.num_items),
                                                   known_favourites_only=False):
    top = np.argsort(-scores, axis=1)[:, :10]
    expected += np.take_along_axis(scores, top, axis=1).sum()
    seen += int(((top == states.item[batch][:, None]).any(axis=1) & positive[batch]).sum())
  assert abs(seen - expected) < 3 * math.sqrt(expected), (seen, expected)


def test_the_oracle_beats_most_popular_by_far_and_a_bounded_history_costs(log):
  out_dir, _, last, vocabulary = log
  positive = last[last['positive']]
  args = (out_dir, _ids(positive, 'user_id'), positive['ts'], _ids(positive, 'item_id'),
          vocabulary)
  full = (oracle_lib.oracle_ranks(*args, history_window=None) < 50).mean()
  bounded = (oracle_lib.oracle_ranks(*args, history_window=10) < 50).mean()
  popular = (oracle_lib.popularity_equivalent_ranks(*args) < 50).mean()
  assert full > 1.5 * popular, (full, popular)
  assert popular < bounded < full, (popular, bounded, full)


def test_targets_not_in_the_log_are_named(log):
  out_dir, _, last, vocabulary = log
  with pytest.raises(ValueError, match='no play of user u000000 at ts 5'):
    oracle_lib.oracle_ranks(out_dir, [b'u000000'], [5], [b'i000001'], vocabulary)


def test_a_log_of_another_generator_is_refused(log, tmp_path):
  out_dir, _, _, _ = log
  copy = tmp_path / 'copy'
  copy.mkdir()
  for name in os.listdir(out_dir):
    if name.startswith('_'):
      (copy / name).write_bytes(open(os.path.join(out_dir, name), 'rb').read())
  arrays = dict(np.load(copy / '_ground_truth.npz'))
  arrays['item_popularity'] = arrays['item_popularity'][::-1]
  np.savez(copy / '_ground_truth.npz', **arrays)
  with pytest.raises(ValueError, match='not written by this generator'):
    oracle_lib.Oracle(str(copy))


def test_the_history_filter_finds_the_hidden_session_genre(log):
  out_dir, _, last, _ = log
  oracle = oracle_lib.Oracle(out_dir)
  states = oracle.states(_ids(last, 'user_id'), last['ts'], history_window=20)
  law = oracle.filtered_previous_shares(states)
  np.testing.assert_allclose(law.sum(axis=1), 1.0)
  truth = law[np.arange(len(law)), states.previous_slot]
  blind = oracle.filtered_previous_shares(states, use_intents=False, use_feedback=False)
  blind_truth = blind[np.arange(len(blind)), states.previous_slot]
  assert truth.mean() > 0.8, truth.mean()  # chance: about 1/3
  assert truth.mean() >= blind_truth.mean() - 0.01, (truth.mean(), blind_truth.mean())


def test_inferring_the_session_genre_costs_less_than_it_leaves(log):
  out_dir, _, last, vocabulary = log
  positive = last[last['positive']]
  args = (out_dir, _ids(positive, 'user_id'), positive['ts'], _ids(positive, 'item_id'),
          vocabulary)
  bounded = (oracle_lib.oracle_ranks(*args, history_window=50) < 50).mean()
  filtered = (oracle_lib.history_filtered_ranks(*args, history_window=50) < 50).mean()
  popular = (oracle_lib.popularity_equivalent_ranks(*args) < 50).mean()
  assert popular < filtered <= bounded + 0.02, (popular, filtered, bounded)


def test_favourite_posterior_by_hand(log):
  out_dir = log[0]
  oracle = oracle_lib.Oracle(out_dir)
  catalogue, users = oracle.catalogue, oracle.users
  genre = users.liked_genres[0, 0]
  song, other = users.favourites[0, 0, 0], np.flatnonzero(catalogue.item_genre == genre)[0]
  assert song != other
  elsewhere = np.flatnonzero(~np.isin(catalogue.item_genre, users.liked_genres[0]))[0]
  on_demand, recommend = model.INTENT_ON_DEMAND, model.INTENT_RECOMMEND
  # The song asked for twice, another song of its genre once, a song of no liked genre once.
  plays = {'item': np.array([song, other, song, elsewhere]),
           'intent': np.array([on_demand, on_demand, on_demand, recommend])}
  states = oracle_lib.TargetStates(
      user=np.array([0]), has_previous=np.array([True]), previous_slot=np.array([0]),
      previous_skipped=np.array([False]), starts_session=np.array([False]),
      weights=np.full((1, 3), 1 / 3), item=np.array([song]), ts=np.array([0]),
      window_items=[plays['item']], window_rows=[np.arange(4)], plays=plays)
  songs, believed = oracle.favourite_posteriors(states, 0, 1)
  personal = catalogue.popularity ** 0.5
  q = personal[song] / personal[catalogue.item_genre == genre].sum()
  # favourite_share 0.4 of on-demand plays, 8 favourites a genre; 3 on-demand plays of the genre.
  with_it, without = 0.4 / 8 + 0.6 * q, 0.6 * q
  prior = 1 - (1 - q) ** 8
  odds = prior / (1 - prior) * (with_it / without) ** 2 * (1 - with_it) / (1 - without)
  at = list(songs[0, 0]).index(song)
  assert believed[0, 0, at] == pytest.approx(odds / (1 + odds))
  assert believed[0, 1:].sum() == 0.0  # the other liked genres have no song in the window


def test_favourites_inferred_from_the_window_rank_close_to_knowing_them(log):
  out_dir, _, last, vocabulary = log
  positive = last[last['positive']]
  args = (out_dir, _ids(positive, 'user_id'), positive['ts'], _ids(positive, 'item_id'),
          vocabulary)
  oracle = oracle_lib.Oracle(out_dir)
  states = oracle.states(args[1], args[2], history_window=50)
  songs, believed = oracle.favourite_posteriors(states, 0, len(states.user))
  favourite = np.stack([np.isin(songs[i], oracle.users.favourites[states.user[i]])
                        for i in range(len(songs))])
  real = believed > 0
  assert believed[real & favourite].mean() > 1.5 * believed[real & ~favourite].mean(), (
      believed[real & favourite].mean(), believed[real & ~favourite].mean())
  bounded = (oracle_lib.oracle_ranks(*args, history_window=50) < 50).mean()
  inferred = (oracle_lib.oracle_ranks(*args, history_window=50, infer_favourites=True)
              < 50).mean()
  popular = (oracle_lib.popularity_equivalent_ranks(*args) < 50).mean()
  assert popular < inferred <= bounded + 0.02, (popular, inferred, bounded)
