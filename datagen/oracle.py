"""The generator's own law of the next play: the limit of any recall model on a generated log.

For an eval target (a user's play at time ts), the oracle gives every vocabulary item the
generator's probability that it is the user's next play AND is played through (play rate >=
settings.POS_THRESHOLD), given the generator's ground truth at that moment:

- the user's liked genres and their drifted weights at that play, favourites, disliked genre and
  songs, and mean play rate per neutral genre;
- the session genre of the previous play, its outcome (a skip moves the session with
  skip_leaves_genre), and whether the target starts a new session (read from the time gap: the
  generator never leaves 30 minutes inside a session nor fewer between sessions);
- the in-genre popularity laws of the user's own picks and of the system's, and the global one;
- the next play's intent (and, for a genre request, the genre asked for) marginalised.

Ranking every item by it gives the best POS@N any ranker can reach on the log in expectation.
The history-bounded variant knows a favourite only if it appears in the last `history_window`
plays before the target (what a model with that history could know of it); the mass of the
favourites it cannot see goes where favourites are drawn from, the user's own popularity law of
the genre.

The favourite-inferring variant knows no favourite: it reads the window as a model would, giving
each song of a liked genre there its posterior probability of being a favourite (from how often
it was asked for on demand among the on-demand plays of its genre, and how rare it is by the
user's own popularity law; Oracle.favourite_posteriors). That is the generator's own posterior
given the window, so a model with that history cannot tell favourites apart better in
expectation: it is the tighter bound (on the quality benchmark it cost 0.009 POS@50 against
knowing the window's favourites, 0.441 to 0.432 over three seeds: docs/results.md).

history_filtered_ranks also hides the session genre: it infers it from the window's items,
intents, skips and session starts (a forward filter), to measure what intents and skips tell.

The generator is deterministic by seed with counter-based random streams, so the oracle rebuilds
the catalogue, the users and their plays from _ground_truth.json and reads the hidden state of
each play (session slot, session start) off the regenerated plays; each target is found by its
user and ts. With catalogue drift (--days), songs outside their life at the target's time get
probability 0 (the generator drops such plays; the law then skips to the next one, which the
oracle does not follow: its figures are exact for logs without drift).
"""

import dataclasses
import glob
import math
import os
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from contract import settings
from datagen import generate as generate_lib
from datagen import ground_truth
from datagen import model
from datagen.random_streams import Streams

# Eval targets scored per step: [TARGETS_PER_BATCH, V] float64 arrays (20 MB at V = 20k).
TARGETS_PER_BATCH = 128


def _text(values: Sequence) -> list:
  return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def positive_probability_liked(config: model.GeneratorConfig, threshold: float) -> float:
  """P(play rate >= threshold) of a liked song: 1 - Exp(gap), or interrupted at U * 0.9."""
  full = 1.0 - math.exp(-(1.0 - threshold) / config.mean_full_play_gap) if threshold <= 1 else 0.0
  interrupted = max(0.0, 1.0 - threshold / 0.9)
  return (1.0 - config.interrupt_rate) * full + config.interrupt_rate * interrupted


def positive_probability_neutral(config: model.GeneratorConfig, mean: np.ndarray,
                                 threshold: float) -> np.ndarray:
  """P(play rate >= threshold) of a neutral song whose user-genre mean play rate is `mean`:
  the clip at 1 changes nothing below 1, so it is a normal tail."""
  z = (threshold - np.asarray(mean, np.float64)) / (config.neutral_play_rate_sd * math.sqrt(2.0))
  return 0.5 * np.vectorize(math.erfc)(z)


def positive_probability_disliked(config: model.GeneratorConfig, neutral: np.ndarray,
                                  threshold: float) -> np.ndarray:
  """P(play rate >= threshold) of a disliked song: tolerated like a neutral one, else skipped at
  min(Exp(mean_skip), max_skip)."""
  skipped = (math.exp(-threshold / config.mean_skip_play_rate)
             if threshold <= config.max_skip_play_rate else 0.0)
  return config.tolerate_rate * neutral + (1.0 - config.tolerate_rate) * skipped


@dataclasses.dataclass
class TargetStates:
  """The generator's state before each target play (arrays [B] unless noted)."""
  user: np.ndarray  # int64 user index
  has_previous: np.ndarray  # bool: not the user's first generated play
  previous_slot: np.ndarray  # int64: session slot of the previous play (0 if none)
  previous_skipped: np.ndarray  # bool: the previous play was a skip (play rate <= NEG_THRESHOLD)
  starts_session: np.ndarray  # bool: the target starts a new session
  weights: np.ndarray  # float64 [B, liked]: the user's taste weights at the target
  item: np.ndarray  # int64: the target's item index (ground truth)
  ts: np.ndarray  # int64: the target's epoch ms
  window_items: list  # per target: item indices of the written plays before it (oldest first)
  window_rows: list  # per target: those plays' rows in `plays`
  plays: Dict[str, np.ndarray]  # the regenerated plays the rows point into


class Oracle:
  """The generator's law for one generated log (see the module docstring)."""

  def __init__(self, log_dir: str):
    self.truth = ground_truth.load(log_dir)
    self.config = self.truth.config
    streams = Streams(self.config.seed)
    self.streams = streams
    self.catalogue = model.make_catalogue(self.config, streams)
    self.users = model.make_users(self.config, streams, self.catalogue)
    if not (np.array_equal(self.catalogue.popularity, self.truth.item_popularity)
            and np.array_equal(self.users.favourites, self.truth.user_favourites)):
      raise ValueError(f'{log_dir}: the ground truth was not written by this generator (its '
                       'catalogue or users differ from the ones its parameters give)')
    written = self.truth.document['output'].get('written_ts_ms', [0, np.iinfo(np.int64).max])
    self.written_ts_ms = (int(written[0]), int(written[1]))
    self._positive_liked = positive_probability_liked(self.config, settings.POS_THRESHOLD)
    self._positive_neutral = positive_probability_neutral(
        self.config, self.truth.user_neutral_mean, settings.POS_THRESHOLD)  # [U, G]
    self._positive_disliked = positive_probability_disliked(
        self.config, self._positive_neutral, settings.POS_THRESHOLD)  # [U, G]

  def in_genre_law(self, exponent: float) -> np.ndarray:
    """[num_items] P(item | its genre) when songs of a genre are picked by popularity^exponent:
    the personal law (personal_popularity_exponent) or the system's (1)."""
    weights = self.catalogue.popularity ** exponent
    genre = self.catalogue.item_genre
    return weights / np.bincount(genre, weights, self.config.num_genres)[genre]

  def _plays(self, user_indices: np.ndarray) -> Dict[str, np.ndarray]:
    """The regenerated plays (every generated row, written or not) of the chunks holding users."""
    bounds = generate_lib.chunk_user_bounds(self.users.num_events, 0, self.config.num_users,
                                            generate_lib.DEFAULT_CHUNK_EVENTS)
    wanted = np.unique(user_indices)
    parts = []
    for first, end in zip(bounds[:-1], bounds[1:]):
      if np.any((wanted >= first) & (wanted < end)):
        parts.append(model.generate_chunk(self.config, self.streams, self.catalogue, self.users,
                                          first, end))
    plays = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    plays['written'] = (model.in_catalogue(self.catalogue, plays['item'], plays['ts'])
                        & (plays['ts'] >= self.written_ts_ms[0])
                        & (plays['ts'] < self.written_ts_ms[1]))
    return plays

  def states(self, user_ids: Sequence, target_ts: Sequence[int],
             history_window: Optional[int] = None) -> TargetStates:
    """The state before each target (user id, epoch ms of the target play)."""
    user = self.truth.user_index(_text(user_ids))
    ts = np.asarray(target_ts, np.int64).reshape(-1)
    if ts.shape != user.shape:
      raise ValueError(f'{user.size} user ids but {ts.size} target timestamps')
    plays = self._plays(user)
    # Rows are ordered by user, then time: one sorted key finds each (user, ts).
    base = min(int(plays['ts'].min()), int(ts.min()) if ts.size else 0)
    span = max(int(plays['ts'].max()), int(ts.max()) if ts.size else 0) - base + 1
    keys = plays['user'] * span + (plays['ts'] - base)
    wanted = user * span + (ts - base)
    row = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    missing = keys[row] != wanted
    if missing.any():
      bad = int(np.flatnonzero(missing)[0])
      raise ValueError(f'no play of user {_text(user_ids)[bad]} at ts {int(ts[bad])} in the '
                       'regenerated log: the targets are not from this generated log')
    first_row = np.searchsorted(plays['user'], user)
    has_previous = row > first_row
    previous = np.maximum(row - 1, 0)
    position = row - first_row
    window_rows = []
    for r, start in zip(row.tolist(), first_row.tolist()):
      rows = start + np.flatnonzero(plays['written'][start:r])
      window_rows.append(rows if history_window is None else rows[-history_window:])
    return TargetStates(
        user=user, has_previous=has_previous,
        previous_slot=np.where(has_previous, plays['session_slot'][previous], 0),
        previous_skipped=has_previous & (plays['play_rate'][previous] <= settings.NEG_THRESHOLD),
        starts_session=plays['session_start'][row],
        weights=model.taste_weights(self.users, user,
                                    model.play_progress(self.users, user, position)),
        item=plays['item'][row], ts=ts, window_items=[plays['item'][r] for r in window_rows],
        window_rows=window_rows, plays=plays)

  def slot_shares(self, states: TargetStates, use_feedback: bool = True,
                  previous_shares: Optional[np.ndarray] = None) -> np.ndarray:
    """[B, liked]: the chance of each liked slot as the target's session slot before its intent
    is drawn (a genre request may still move it). Without use_feedback, the previous play's
    skip is ignored (as if it was not one). previous_shares [B, liked]: what is known of the
    previous play's slot (default: the slot itself, one-hot)."""
    if previous_shares is None:
      previous_shares = np.eye(self.config.liked_genres_per_user)[states.previous_slot]
    return self._next_slot_shares(previous_shares, states.weights, states.has_previous,
                                  states.previous_skipped & use_feedback, states.starts_session)

  def _next_slot_shares(self, previous: np.ndarray, weights: np.ndarray,
                        has_previous: np.ndarray, previous_skipped: np.ndarray,
                        starts_session: np.ndarray) -> np.ndarray:
    """[B, liked] the slot law of a play before its intent, from the law of the previous
    play's slot [B, liked], the taste weights at the play, and what the log shows."""
    config = self.config
    others = np.einsum('bs,bst->bt', previous, model.other_slot_shares(weights))
    fresh = np.where(has_previous[:, None],
                     config.same_genre_next_session * previous
                     + (1.0 - config.same_genre_next_session) * weights, weights)
    leave = np.where(previous_skipped, config.skip_leaves_genre, 0.0)[:, None]
    in_session = (1.0 - leave) * previous + leave * others
    return np.where(starts_session[:, None], fresh, in_session)

  def _intent_likelihoods(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
    """[b, 3 intents, liked]: P(item | intent, session slot) of plays of the users."""
    config = self.config
    catalogue = self.catalogue
    popularity = catalogue.popularity
    genre = catalogue.item_genre[item]
    in_slot = self.users.liked_genres[user] == genre[:, None]  # [b, liked]
    personal = self.in_genre_law(config.personal_popularity_exponent)[item][:, None] * in_slot
    system = self.in_genre_law(1.0)[item][:, None] * in_slot
    favourite = (self.users.favourites[user] == item[:, None, None]).mean(axis=2)  # [b, liked]
    disliked = (self.users.disliked_items[user] == item[:, None]).mean(axis=1)[:, None] \
        if config.disliked_items_per_user else np.zeros((len(user), 1))
    on_demand = config.favourite_share * favourite + (1 - config.favourite_share) * personal
    recommend = (config.recommend_disliked * disliked + (1 - config.recommend_disliked) * (
        config.recommend_in_taste * system
        + (1 - config.recommend_in_taste) * popularity[item][:, None]))
    likelihood = np.empty((len(user), 3, in_slot.shape[1]))
    likelihood[:, model.INTENT_ON_DEMAND] = on_demand
    likelihood[:, model.INTENT_GENRE_REQUEST] = system
    likelihood[:, model.INTENT_RECOMMEND] = np.broadcast_to(recommend, in_slot.shape)
    return likelihood

  def filtered_previous_shares(self, states: TargetStates, use_intents: bool = True,
                               use_feedback: bool = True) -> np.ndarray:
    """[B, liked] the law of the previous play's session slot given only what the log shows
    of the history window (items, intents, skips, session starts), with the user's true tastes:
    a forward filter over the hidden session genre, started from the taste weights at the
    window's first play. Without use_intents the plays' intents are marginalised, without
    use_feedback their skips are ignored: what each tells of the session genre."""
    config = self.config
    plays = states.plays
    intent_shares = model.intent_shares(config)
    num = len(states.user)
    length = max((len(r) for r in states.window_rows), default=0)
    rows = np.full((num, length), -1, np.int64)  # right-aligned, -1 before the window
    for i, r in enumerate(states.window_rows):
      if len(r):
        rows[i, length - len(r):] = r
    law = np.zeros((num, config.liked_genres_per_user))
    for k in range(length):
      real = rows[:, k] >= 0
      if not real.any():
        continue
      b = np.flatnonzero(real)
      r = rows[b, k]
      user = plays['user'][r]
      weights = model.taste_weights(self.users, user, model.play_progress(
          self.users, user, r - np.searchsorted(plays['user'], user)))
      first = rows[b, k - 1] < 0 if k else np.ones(len(b), bool)
      previous_row = np.maximum(r - 1, 0)
      skipped = (plays['play_rate'][previous_row] <= settings.NEG_THRESHOLD) & use_feedback
      prior = self._next_slot_shares(np.where(first[:, None], weights, law[b]), weights,
                                     ~first, skipped & ~first,
                                     plays['session_start'][r] & ~first)
      switched = np.einsum('bs,bst->bt', prior, model.other_slot_shares(weights))
      requested = (1 - config.genre_request_switch) * prior + config.genre_request_switch * switched
      likelihood = self._intent_likelihoods(user, plays['item'][r])
      by_intent = np.empty_like(likelihood)  # [b, 3 intents, liked]: P(slot, item | intent)
      by_intent[:, model.INTENT_ON_DEMAND] = prior
      by_intent[:, model.INTENT_GENRE_REQUEST] = requested
      by_intent[:, model.INTENT_RECOMMEND] = prior
      by_intent *= likelihood
      if use_intents:
        posterior = by_intent[np.arange(len(b)), plays['intent'][r]]
      else:
        posterior = np.einsum('i,bit->bt', intent_shares, by_intent)
      total = posterior.sum(axis=1, keepdims=True)
      law[b] = np.where(total > 0, posterior / np.maximum(total, 1e-300), prior)
    return law

  def next_positive_scores(self, states: TargetStates, item_index: np.ndarray,
                           known_favourites_only: bool, use_feedback: bool = True,
                           previous_shares: Optional[np.ndarray] = None,
                           infer_favourites: bool = False
                           ) -> Iterator[Tuple[slice, np.ndarray]]:
    """(batch slice, [b, V] P(next play is item and is played through)) over the targets.

    item_index [V]: the catalogue index of each ranked item. infer_favourites: the favourites
    are not known at all; each song of the window is one with its posterior probability given
    the window's plays (favourite_posteriors), as a model reading the history could know.
    """
    config = self.config
    od, gr, rec = model.intent_shares(config)
    num_slots = config.liked_genres_per_user
    num_genres = config.num_genres
    genre_v = self.catalogue.item_genre[item_index]
    popularity = self.catalogue.popularity
    personal_v = self.in_genre_law(config.personal_popularity_exponent)[item_index]
    system_v = self.in_genre_law(1.0)[item_index]
    global_v = popularity[item_index]
    alive_from = self.catalogue.released_ts_ms[item_index]
    alive_to = self.catalogue.faded_ts_ms[item_index]
    position_of = np.full(config.num_items, -1, np.int64)
    position_of[item_index] = np.arange(len(item_index))
    shares = self.slot_shares(states, use_feedback, previous_shares)
    favourites_per_slot = config.favourites_per_genre

    for start in range(0, len(states.user), TARGETS_PER_BATCH):
      batch = slice(start, start + TARGETS_PER_BATCH)
      user = states.user[batch]
      b = len(user)
      pi = shares[batch]  # [b, liked]
      liked = self.users.liked_genres[user]  # [b, liked]
      others = model.other_slot_shares(states.weights[batch])  # [b, liked, liked]
      # Slot of the genre a genre request plays: the session's, or another liked one.
      requested = ((1.0 - config.genre_request_switch) * pi
                   + config.genre_request_switch * np.einsum('bs,bst->bt', pi, others))
      system_share = pi * rec * (1.0 - config.recommend_disliked) * config.recommend_in_taste
      system_share = system_share + gr * requested
      personal_share = pi * od * (1.0 - config.favourite_share)
      favourite_share = pi * od * config.favourite_share / favourites_per_slot  # per entry
      # Favourites: all known, those the bounded window shows, or inferred from the window.
      if infer_favourites:
        favourites, believed = self.favourite_posteriors(states, start, b)  # [b, liked, W]
      else:
        favourites = self.users.favourites[user]  # [b, liked, F]
        believed = (np.stack([np.isin(favourites[i], states.window_items[start + i])
                              for i in range(b)]) if known_favourites_only
                    else np.ones(favourites.shape, bool))
      # Favourites not known: their mass goes to the law they come from.
      personal_share = personal_share + favourite_share * np.maximum(
          favourites_per_slot - believed.sum(axis=2), 0.0)
      fav_weight = favourite_share[:, :, None] * believed
      per_genre_personal = np.zeros((b, num_genres))
      per_genre_system = np.zeros((b, num_genres))
      rows = np.repeat(np.arange(b), num_slots)
      np.add.at(per_genre_personal, (rows, liked.reshape(-1)), personal_share.reshape(-1))
      np.add.at(per_genre_system, (rows, liked.reshape(-1)), system_share.reshape(-1))
      scores = (per_genre_personal[:, genre_v] * personal_v
                + per_genre_system[:, genre_v] * system_v
                + rec * (1.0 - config.recommend_disliked) * (1.0 - config.recommend_in_taste)
                * global_v)
      fav_rows = np.broadcast_to(np.arange(b)[:, None, None], favourites.shape)
      _scatter_add(scores, fav_rows, position_of[favourites], fav_weight)
      if config.recommend_disliked > 0:
        disliked = self.users.disliked_items[user]  # [b, D]
        _scatter_add(scores, np.broadcast_to(np.arange(b)[:, None], disliked.shape),
                     position_of[disliked],
                     np.full(disliked.shape, rec * config.recommend_disliked
                             / config.disliked_items_per_user))
      ts = states.ts[batch][:, None]
      scores *= (ts >= alive_from) & (ts < alive_to)
      scores *= self._positive(user, genre_v, position_of)
      yield batch, scores

  def favourite_posteriors(self, states: TargetStates, start: int,
                           count: int) -> Tuple[np.ndarray, np.ndarray]:
    """(songs [b, liked, W], P(each is a favourite) [b, liked, W]) of targets start..start+count.

    For each liked slot, the songs of its genre among the window's plays, and the generator's
    posterior that the song is one of the slot's favourites given the window: the prior that
    one of favourites_per_genre draws by the personal law hit it, times, for every on-demand
    play of the slot's genre in the window (the plays a favourite can come from; an on-demand
    play's genre tells its slot), the likelihood of that play being or not being the song with
    and without it as a favourite. Padding: song 0 with probability 0.
    """
    config = self.config
    catalogue = self.catalogue
    plays = states.plays
    genre_all = catalogue.item_genre
    personal = self.in_genre_law(config.personal_popularity_exponent)
    per_slot = config.favourites_per_genre
    share = config.favourite_share
    found = []
    for i in range(start, start + count):
      rows = states.window_rows[i]
      liked = self.users.liked_genres[states.user[i]]
      on_demand = rows[plays['intent'][rows] == model.INTENT_ON_DEMAND]
      demanded = plays['item'][on_demand]
      slots = []
      for genre in liked:
        songs = np.unique(plays['item'][rows][genre_all[plays['item'][rows]] == genre])
        q = personal[songs]
        with_it = share / per_slot + (1.0 - share) * q  # P(an on-demand play is the song)
        without = (1.0 - share) * q
        times = (demanded[None, :] == songs[:, None]).sum(axis=1)
        others = (genre_all[demanded] == genre).sum() - times
        prior = 1.0 - (1.0 - q) ** per_slot
        log_odds = (np.log(prior) - np.log1p(-prior) + times * np.log(with_it / without)
                    + others * (np.log1p(-with_it) - np.log1p(-without)))
        slots.append((songs, 1.0 / (1.0 + np.exp(-log_odds))))
      found.append(slots)
    width = max([len(songs) for slots in found for songs, _ in slots] + [1])
    songs = np.zeros((count, len(found[0]) if found else 0, width), np.int64)
    believed = np.zeros(songs.shape)
    for i, slots in enumerate(found):
      for s, (items, posterior) in enumerate(slots):
        songs[i, s, :len(items)] = items
        believed[i, s, :len(items)] = posterior
    return songs, believed

  def _positive(self, user: np.ndarray, genre_v: np.ndarray,
                position_of: np.ndarray) -> np.ndarray:
    """[b, V] P(played through | user, item) by the user's affinity for it."""
    positive = self._positive_neutral[user][:, genre_v]
    liked = (self.users.liked_genres[user][:, :, None] == genre_v[None, None, :]).any(axis=1)
    positive = np.where(liked, self._positive_liked, positive)
    disliked_genre = self.users.disliked_genre[user][:, None] == genre_v[None, :]
    positive = np.where(disliked_genre, self._positive_disliked[user][:, genre_v], positive)
    disliked = position_of[self.users.disliked_items[user]]  # [b, D], -1 if not ranked
    rows = np.broadcast_to(np.arange(len(user))[:, None], disliked.shape)[disliked >= 0]
    columns = disliked[disliked >= 0]
    positive[rows, columns] = self._positive_disliked[user[rows], genre_v[columns]]
    return positive


def _scatter_add(scores: np.ndarray, rows: np.ndarray, columns: np.ndarray,
                 weights: np.ndarray) -> None:
  """scores[rows, columns] += weights, repeats adding up; columns < 0 (not ranked) dropped."""
  keep = columns >= 0
  np.add.at(scores, (rows[keep], columns[keep]), weights[keep])


def ranks_from_scores(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """[b] rank of each target among the [b, V] scores: items scoring strictly higher, as
  trainer.model.target_ranks counts them; a target outside [0, V) gets V (never a hit)."""
  size = scores.shape[1]
  inside = (targets >= 0) & (targets < size)
  target_scores = scores[np.arange(len(targets)), np.where(inside, targets, 0)]
  return np.where(inside, (scores > target_scores[:, None]).sum(axis=1), size).astype(np.int64)


def _vocabulary_positions(truth: ground_truth.GroundTruth, vocabulary: Sequence,
                          target_item_ids: Sequence) -> Tuple[np.ndarray, np.ndarray]:
  """(catalogue index of each vocabulary item, vocabulary position of each target or V)."""
  vocabulary = _text(vocabulary)
  item_index = truth.item_index(vocabulary)
  position = {item: v for v, item in enumerate(vocabulary)}
  targets = np.asarray([position.get(t, len(vocabulary)) for t in _text(target_item_ids)],
                       np.int64)
  return item_index, targets


def oracle_ranks(log_dir: str, user_ids: Sequence[bytes], target_ts: Sequence[int],
                 target_item_ids: Sequence[bytes], vocabulary: Sequence[bytes],
                 history_window: Optional[int] = None, use_feedback: bool = True,
                 infer_favourites: bool = False) -> np.ndarray:
  """[B] int64 rank (0 = best) of each target among the vocabulary by the oracle's law.

  Args:
    log_dir: the generated log (with _ground_truth.json/.npz).
    user_ids, target_ts, target_item_ids: each eval target's user, ts (epoch ms) and item.
    vocabulary: the ranked items (e.g. Transform's item vocabulary); a target outside it gets
      rank len(vocabulary), never a hit.
    history_window: None: every favourite is known; an int: only favourites among the written
      plays of the last history_window plays before the target.
    use_feedback: False ignores the previous play's skip (to measure what it tells).
    infer_favourites: no favourite is known; the window's songs are favourites by their
      posterior given its plays (Oracle.favourite_posteriors; needs history_window).
  """
  if infer_favourites and history_window is None:
    raise ValueError('infer_favourites needs a history_window to infer them from')
  oracle = Oracle(log_dir)
  item_index, targets = _vocabulary_positions(oracle.truth, vocabulary, target_item_ids)
  states = oracle.states(user_ids, target_ts, history_window)
  ranks = np.empty(len(targets), np.int64)
  for batch, scores in oracle.next_positive_scores(states, item_index, history_window is not None,
                                                   use_feedback,
                                                   infer_favourites=infer_favourites):
    ranks[batch] = ranks_from_scores(scores, targets[batch])
  return ranks


def history_filtered_ranks(log_dir: str, user_ids: Sequence[bytes], target_ts: Sequence[int],
                           target_item_ids: Sequence[bytes], vocabulary: Sequence[bytes],
                           history_window: int, use_intents: bool = True,
                           use_feedback: bool = True) -> np.ndarray:
  """[B] like oracle_ranks with a bounded history, but the session genre is not known either:
  it is inferred from the window's plays (Oracle.filtered_previous_shares). With and without
  use_intents / use_feedback, this measures what intents and skips tell of what comes next."""
  oracle = Oracle(log_dir)
  item_index, targets = _vocabulary_positions(oracle.truth, vocabulary, target_item_ids)
  states = oracle.states(user_ids, target_ts, history_window)
  if not use_feedback:
    states = dataclasses.replace(states, previous_skipped=np.zeros_like(states.previous_skipped))
  previous = oracle.filtered_previous_shares(states, use_intents, use_feedback)
  ranks = np.empty(len(targets), np.int64)
  for batch, scores in oracle.next_positive_scores(states, item_index, True,
                                                   previous_shares=previous):
    ranks[batch] = ranks_from_scores(scores, targets[batch])
  return ranks


def popularity_equivalent_ranks(log_dir: str, user_ids: Sequence[bytes],
                                target_ts: Sequence[int], target_item_ids: Sequence[bytes],
                                vocabulary: Sequence[bytes]) -> np.ndarray:
  """[B] the ranks oracle_ranks gives when every target's scores are the vocabulary's own order
  (Transform's vocabulary is by descending train count): the most-popular baseline through the
  oracle's id, target and ranking code, which must reproduce the benchmark's most-popular row."""
  oracle = Oracle(log_dir)
  item_index, targets = _vocabulary_positions(oracle.truth, vocabulary, target_item_ids)
  oracle.states(user_ids, target_ts)  # every target must be a play of the log
  scores = -np.arange(len(item_index), dtype=np.float64)
  ranks = np.empty(len(targets), np.int64)
  for start in range(0, len(targets), TARGETS_PER_BATCH):
    batch = targets[start:start + TARGETS_PER_BATCH]
    ranks[start:start + len(batch)] = ranks_from_scores(
        np.broadcast_to(scores, (len(batch), len(scores))), batch)
  return ranks


def predicted_positive_shares(log_dir: str, user_ids: Sequence[bytes],
                              target_ts: Sequence[int]) -> np.ndarray:
  """[B] the oracle's P(the target play is played through): its law summed over the whole
  catalogue. Their mean must match the share of positive targets."""
  oracle = Oracle(log_dir)
  states = oracle.states(user_ids, target_ts)
  shares = np.empty(len(states.user))
  for batch, scores in oracle.next_positive_scores(states, np.arange(oracle.config.num_items),
                                                   known_favourites_only=False):
    shares[batch] = scores.sum(axis=1)
  return shares


def eval_targets(examples_uri: str, split: str = 'eval') -> Tuple[list, np.ndarray, list]:
  """(user ids, ts, item ids) of a PlayLogExampleGen split's examples, in file order (the order
  benchmarks/quality.py reads the split in)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from contract import features  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(os.path.join(examples_uri, f'Split-{split}', '*.gz')))
  if not files:
    raise FileNotFoundError(f'no examples in {examples_uri}/Split-{split}')
  spec = {features.USER_ID: tf.io.FixedLenFeature([], tf.string),
          features.TS: tf.io.FixedLenFeature([], tf.int64),
          features.ITEM_ID: tf.io.FixedLenFeature([], tf.string)}
  users, ts, items = [], [], []
  for batch in tf.data.TFRecordDataset(files, compression_type='GZIP').batch(4096):
    parsed = tf.io.parse_example(batch, spec)
    users.extend(parsed[features.USER_ID].numpy().tolist())
    ts.append(parsed[features.TS].numpy())
    items.extend(parsed[features.ITEM_ID].numpy().tolist())
  return users, np.concatenate(ts), items


def benchmark_ranks(log_dir: str, examples_uri: str, vocabulary: Sequence[bytes],
                    history_length: int = settings.HISTORY_LENGTH) -> Dict[str, np.ndarray]:
  """The oracle's ranks of a generated log's eval examples (full, history-bounded, favourites
  inferred, and the session genre inferred with and without skips and intents), by the names the
  quality benchmark's table prints them under."""
  users, ts, items = eval_targets(examples_uri)
  feedback_reading, feedback_blind = feedback_oracle_names(history_length)
  return {
      'oracle (generator law)': oracle_ranks(log_dir, users, ts, items, vocabulary, None),
      f'oracle, favourites in last {history_length} plays': oracle_ranks(
          log_dir, users, ts, items, vocabulary, history_length),
      f'oracle, favourites inferred from last {history_length} plays': oracle_ranks(
          log_dir, users, ts, items, vocabulary, history_length, infer_favourites=True),
      # The pair below differs only in what a ranker reads of skips and intents: the most that
      # feedback features (variant b against a) can add to POS@N on this log.
      feedback_reading: history_filtered_ranks(log_dir, users, ts, items, vocabulary,
                                               history_length),
      feedback_blind: history_filtered_ranks(log_dir, users, ts, items, vocabulary,
                                             history_length, use_intents=False,
                                             use_feedback=False),
  }


def feedback_oracle_names(history_length: int = settings.HISTORY_LENGTH) -> Tuple[str, str]:
  """The names of benchmark_ranks' two session-inferring rows: reading skips and intents, and
  blind to them."""
  reading = f'oracle, session genre from last {history_length} plays'
  return reading, reading + ', blind to skips and intents'
