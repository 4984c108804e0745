"""The generative model of play logs: catalogue, users and their plays (see docs/data_generator.md).

Everything here is vectorised numpy over a chunk of users, and every random draw comes from a
counter-based stream (random_streams.Streams), so a chunk's plays depend only on the seed, the
configuration and the users in it.
"""

import dataclasses
from typing import Dict, Tuple

import numpy as np

from contract import features
from contract import settings
from datagen.random_streams import Streams

# Codes of the contract's intents, in the order of features.INTENTS.
INTENT_NAMES = features.INTENTS
INTENT_ON_DEMAND, INTENT_GENRE_REQUEST, INTENT_RECOMMEND = (
    INTENT_NAMES.index(name) for name in ('on_demand', 'genre_request', 'recommend'))

AFFINITY_LIKED, AFFINITY_NEUTRAL, AFFINITY_DISLIKED = 1, 0, -1

_GENRE_NAMES = ('pop', 'rock', 'hip_hop', 'electronic', 'rnb', 'indie', 'dance', 'latin',
                'country', 'metal', 'jazz', 'classical', 'folk', 'soul', 'reggae', 'punk', 'blues',
                'kpop', 'ambient', 'soundtrack')

_MS_PER_DAY = 86_400_000


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
  """Every knob of the generative model. Defaults give a realistic mix; see the docs."""
  num_events: int = 100_000
  num_users: int = 1_000
  num_items: int = 20_000
  seed: int = 0
  # Catalogue.
  num_genres: int = 20
  genre_zipf_exponent: float = 0.8  # genre sizes ~ 1 / rank^s
  item_zipf_exponent: float = 1.0  # item popularity ~ 1 / rank^s
  min_duration_ms: int = 120_000
  max_duration_ms: int = 360_000
  # Users.
  liked_genres_per_user: int = 3
  disliked_items_per_user: int = 5
  favourites_per_genre: int = 8
  user_activity_alpha: float = 1.2  # Pareto tail of events per user (smaller = heavier)
  min_events_per_user: int = 5
  max_activity_ratio: float = 50.0  # cap of a user's activity weight over the median user's
  # Sessions.
  mean_session_length: float = 12.0
  same_genre_next_session: float = 0.5  # a session keeps the previous session's genre
  # Intents and item choice.
  on_demand_share: float = 0.4
  genre_request_share: float = 0.2
  recommend_share: float = 0.4
  favourite_share: float = 0.4  # on_demand plays that are one of the user's favourites
  personal_popularity_exponent: float = 0.5  # how much users' own picks follow popularity
  recommend_in_taste: float = 0.3  # recommendations from the session genre (else global hits)
  # Feedback that changes what comes next (docs: "Feedback"); 0 turns each one off, and all four
  # at 0 reproduce the generator without them byte for byte.
  skip_ends_session: float = 0.2  # a skip ends the session: the next play starts a new one
  skip_leaves_genre: float = 0.5  # a skip that does not end it moves it to another liked genre
  genre_request_switch: float = 0.5  # a genre request asks for another liked genre (weighted
  # by taste), and the session follows it from that play on; else it asks for the session genre
  recommend_disliked: float = 0.1  # recommendations that are one of the user's disliked songs
  # Play rate.
  interrupt_rate: float = 0.05  # liked songs stopped at a random point anyway
  tolerate_rate: float = 0.05  # disliked songs let play like a neutral one
  mean_skip_play_rate: float = 0.07  # disliked songs: play rate ~ Exp(mean), capped below
  max_skip_play_rate: float = 0.3
  mean_full_play_gap: float = 0.03  # liked songs: play rate ~ 1 - Exp(mean)
  neutral_play_rate_mean: float = 0.55  # average over users and genres
  neutral_genre_spread: float = 0.3  # a user's mean for a neutral genre is mean +- spread
  neutral_play_rate_sd: float = 0.2  # noise around that user-genre mean
  # Time.
  start_ts_ms: int = 1_704_067_200_000  # 2024-01-01T00:00:00Z
  start_spread_days: float = 30.0  # users' first plays are spread over this many days
  span_days: float = 90.0  # users' sessions are spaced to end within this span (on average)
  mean_session_gap_hours: float = 18.0  # light users; heavy users' gaps shrink to fit the span
  min_session_gap_minutes: float = 30.0
  max_gap_in_session_s: float = 10.0
  # Catalogue drift: this share of the songs is released (never played before its release),
  # this share fades (never played from then on), each at a uniform random time of the drift_days
  # days from drift_start_day (0: the whole span). Plays of a song outside its life are dropped.
  released_share: float = 0.0
  faded_share: float = 0.0
  drift_start_day: float = 0.0
  drift_days: float = 0.0

  def validate(self) -> None:
    """Raises ValueError naming the first bad knob."""
    def require(ok, message):
      if not ok:
        raise ValueError(message)
    require(self.num_users >= 1, f'num_users must be >= 1, got {self.num_users}')
    require(self.num_items >= 1, f'num_items must be >= 1, got {self.num_items}')
    require(self.min_events_per_user >= 1, 'min_events_per_user must be >= 1')
    require(self.num_events >= self.num_users * self.min_events_per_user,
            f'num_events ({self.num_events}) must be >= num_users ({self.num_users}) x '
            f'min_events_per_user ({self.min_events_per_user})')
    require(self.seed >= 0, f'seed must be >= 0, got {self.seed}')
    require(self.num_genres >= self.liked_genres_per_user + 1,
            f'num_genres ({self.num_genres}) must exceed liked_genres_per_user '
            f'({self.liked_genres_per_user}): every user also has a disliked genre')
    require(self.liked_genres_per_user >= 1, 'liked_genres_per_user must be >= 1')
    require(self.num_items >= self.num_genres,
            f'num_items ({self.num_items}) must be >= num_genres ({self.num_genres})')
    require(self.favourites_per_genre >= 1, 'favourites_per_genre must be >= 1')
    require(self.disliked_items_per_user >= 0, 'disliked_items_per_user must be >= 0')
    require(0 < self.min_duration_ms <= self.max_duration_ms,
            'need 0 < min_duration_ms <= max_duration_ms')
    require(self.mean_session_length >= 1, 'mean_session_length must be >= 1')
    shares = (self.on_demand_share, self.genre_request_share, self.recommend_share)
    require(min(shares) >= 0 and sum(shares) > 0,
            f'intent shares must be >= 0 and not all 0, got {shares}')
    for name in ('same_genre_next_session', 'favourite_share', 'recommend_in_taste',
                 'interrupt_rate', 'tolerate_rate', 'skip_ends_session', 'skip_leaves_genre',
                 'genre_request_switch', 'recommend_disliked'):
      value = getattr(self, name)
      require(0 <= value <= 1, f'{name} must be in [0, 1], got {value}')
    require(0 < self.max_skip_play_rate <= 1, 'max_skip_play_rate must be in (0, 1]')
    require(self.recommend_disliked == 0 or self.disliked_items_per_user >= 1,
            f'recommend_disliked ({self.recommend_disliked}) needs disliked_items_per_user >= 1')
    for name in ('released_share', 'faded_share'):
      value = getattr(self, name)
      require(0 <= value < 1, f'{name} must be in [0, 1), got {value}')


def genre_names(num_genres: int) -> Tuple[str, ...]:
  extra = tuple(f'genre_{g:02d}' for g in range(len(_GENRE_NAMES), num_genres))
  return (_GENRE_NAMES + extra)[:num_genres]


def _zipf_weights(n: int, exponent: float) -> np.ndarray:
  weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
  return weights / weights.sum()


def _sample_categorical(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
  # cdf is increasing and ends at 1; min() guards the float rounding at the top end.
  return np.minimum(np.searchsorted(cdf, u, side='right'), len(cdf) - 1)


class GenreSampler:
  """Draws items of a given genre with probability ~ popularity^exponent, vectorised.

  Items are grouped by genre; within genre g the normalised cumulative weights are shifted by g,
  so one searchsorted of (g + u) over the whole table draws from genre g.
  """

  def __init__(self, item_genre: np.ndarray, popularity: np.ndarray, exponent: float,
               num_genres: int):
    self.items_by_genre = np.lexsort((-popularity, item_genre))  # by genre, hits first
    genres = item_genre[self.items_by_genre]
    weights = popularity[self.items_by_genre] ** exponent
    cum = np.cumsum(weights)
    totals = np.bincount(genres, weights=weights, minlength=num_genres)
    ends = np.cumsum(totals)
    starts = ends - totals
    self.table = genres + (cum - starts[genres]) / totals[genres]
    self.genre_end = np.cumsum(np.bincount(genres, minlength=num_genres))

  def sample(self, genre: np.ndarray, u: np.ndarray) -> np.ndarray:
    positions = np.searchsorted(self.table, genre + u, side='right')
    positions = np.minimum(positions, self.genre_end[genre] - 1)
    return self.items_by_genre[positions]


@dataclasses.dataclass
class Catalogue:
  """Items: genre, popularity (sums to 1) and duration; indices are the item ids' numbers."""
  item_genre: np.ndarray  # int32 [num_items]
  popularity: np.ndarray  # float64 [num_items]
  duration_ms: np.ndarray  # int64 [num_items]
  global_cdf: np.ndarray  # float64 [num_items]: cumulative popularity, for global hits
  personal: GenreSampler  # users' own picks within a genre
  system: GenreSampler  # the system's picks within a genre (follows popularity fully)
  released_ts_ms: np.ndarray  # int64 [num_items]: no play before (the span's start for most)
  faded_ts_ms: np.ndarray  # int64 [num_items]: no play at or after (int64 max for most)


def make_catalogue(config: GeneratorConfig, streams: Streams) -> Catalogue:
  items = np.arange(config.num_items)
  genre_cdf = np.cumsum(_zipf_weights(config.num_genres, config.genre_zipf_exponent))
  item_genre = _sample_categorical(genre_cdf, streams.uniform('item_genre', items))
  # Every genre gets at least one item so that every user's liked genres can be played.
  item_genre[:config.num_genres] = np.arange(config.num_genres)
  # Popularity rank is a random permutation of the ids, so ids say nothing about popularity.
  rank = np.empty(config.num_items, dtype=np.int64)
  rank[np.argsort(streams.uniform('item_rank', items), kind='stable')] = items
  popularity = _zipf_weights(config.num_items, config.item_zipf_exponent)[rank]
  span = config.max_duration_ms - config.min_duration_ms
  duration_ms = config.min_duration_ms + np.floor(
      streams.uniform('item_duration', items) * (span + 1)).astype(np.int64)
  item_genre = item_genre.astype(np.int32)
  released_ts_ms, faded_ts_ms = _item_lives(config, streams, items)
  return Catalogue(
      item_genre=item_genre,
      popularity=popularity,
      duration_ms=duration_ms,
      global_cdf=np.cumsum(popularity) / popularity.sum(),
      personal=GenreSampler(item_genre, popularity, config.personal_popularity_exponent,
                            config.num_genres),
      system=GenreSampler(item_genre, popularity, 1.0, config.num_genres),
      released_ts_ms=released_ts_ms, faded_ts_ms=faded_ts_ms)


def _item_lives(config: GeneratorConfig, streams: Streams,
                items: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """When each song is released and fades: for released_share / faded_share of the songs, a
  uniform random time of the drift days; the others live before and after them."""
  start_ms = config.start_ts_ms + config.drift_start_day * _MS_PER_DAY
  span_ms = (config.drift_days or config.span_days) * _MS_PER_DAY
  def random_time(stream: str) -> np.ndarray:
    return np.floor(start_ms + streams.uniform(stream, items) * span_ms).astype(np.int64)
  released = streams.uniform('item_is_released', items) < config.released_share
  faded = streams.uniform('item_fades', items) < config.faded_share
  return (np.where(released, random_time('item_release_time'), 0),
          np.where(faded, random_time('item_fade_time'), np.iinfo(np.int64).max))


def in_catalogue(catalogue: Catalogue, item: np.ndarray, ts: np.ndarray) -> np.ndarray:
  """Whether each play falls within its song's life (catalogue drift)."""
  return (ts >= catalogue.released_ts_ms[item]) & (ts < catalogue.faded_ts_ms[item])


@dataclasses.dataclass
class Users:
  """Tastes of all users; row u is user u."""
  num_events: np.ndarray  # int64 [U]
  liked_genres: np.ndarray  # int32 [U, L]
  liked_weights_start: np.ndarray  # float64 [U, L]: taste at the user's first play, sums to 1
  liked_weights_end: np.ndarray  # float64 [U, L]: taste at the last play (linear drift between)
  disliked_genre: np.ndarray  # int32 [U]
  disliked_items: np.ndarray  # int64 [U, D]
  favourites: np.ndarray  # int64 [U, L, F]: favourites[u, l] are in genre liked_genres[u, l]
  start_ts_ms: np.ndarray  # int64 [U]


def _events_per_user(config: GeneratorConfig, streams: Streams) -> np.ndarray:
  """Power-law activity, summing exactly to num_events (largest-remainder rounding)."""
  users = np.arange(config.num_users)
  u = streams.uniform('user_activity', users)
  weight = (1.0 - u) ** (-1.0 / config.user_activity_alpha)  # Pareto(alpha), >= 1
  weight = np.minimum(weight, np.median(weight) * config.max_activity_ratio)
  spare = config.num_events - config.min_events_per_user * config.num_users
  share = weight / weight.sum() * spare
  counts = np.floor(share).astype(np.int64)
  leftover = spare - counts.sum()
  counts[np.argsort(-(share - counts), kind='stable')[:leftover]] += 1
  return counts + config.min_events_per_user


def _dirichlet_ones(streams: Streams, stream: str, users: np.ndarray, k: int) -> np.ndarray:
  draws = streams.exponential(stream, users[:, None], np.arange(k)[None, :])
  return draws / draws.sum(axis=1, keepdims=True)


def make_users(config: GeneratorConfig, streams: Streams, catalogue: Catalogue) -> Users:
  users = np.arange(config.num_users)
  num_liked = config.liked_genres_per_user
  # Weighted sampling without replacement (Gumbel top-k): users like big genres more often;
  # the next genre in the same order is the disliked one, so dislikes are also often big
  # genres, whose hits the system keeps recommending.
  genre_share = np.bincount(catalogue.item_genre, minlength=config.num_genres)
  gumbel = -np.log(streams.exponential('user_genres', users[:, None],
                                       np.arange(config.num_genres)[None, :]))
  order = np.argsort(-(np.log(genre_share)[None, :] + gumbel), axis=1, kind='stable')
  liked_genres = order[:, :num_liked].astype(np.int32)
  disliked_genre = order[:, num_liked].astype(np.int32)

  disliked_u = streams.uniform('user_disliked_items', users[:, None],
                               np.arange(config.disliked_items_per_user)[None, :])
  disliked_items = _sample_categorical(catalogue.global_cdf, disliked_u).astype(np.int64)

  fav_u = streams.uniform('user_favourites', users[:, None, None],
                          np.arange(num_liked)[None, :, None],
                          np.arange(config.favourites_per_genre)[None, None, :])
  favourites = catalogue.personal.sample(
      np.broadcast_to(liked_genres[:, :, None], fav_u.shape), fav_u).astype(np.int64)

  start_offset = streams.uniform('user_start', users) * config.start_spread_days * _MS_PER_DAY
  start_ts_ms = config.start_ts_ms + np.floor(start_offset).astype(np.int64)
  return Users(
      num_events=_events_per_user(config, streams),
      liked_genres=liked_genres,
      liked_weights_start=_dirichlet_ones(streams, 'user_taste_start', users, num_liked),
      liked_weights_end=_dirichlet_ones(streams, 'user_taste_end', users, num_liked),
      disliked_genre=disliked_genre,
      disliked_items=disliked_items,
      favourites=favourites,
      start_ts_ms=start_ts_ms)


def affinity(users: Users, catalogue: Catalogue, user: np.ndarray,
             item: np.ndarray) -> np.ndarray:
  """AFFINITY_* of each (user, item) pair: dislikes win over likes."""
  genre = catalogue.item_genre[item]
  liked = (users.liked_genres[user] == genre[:, None]).any(axis=1)
  disliked = (users.disliked_genre[user] == genre) | (
      users.disliked_items[user] == item[:, None]).any(axis=1)
  return np.where(disliked, AFFINITY_DISLIKED,
                  np.where(liked, AFFINITY_LIKED, AFFINITY_NEUTRAL)).astype(np.int8)


def generate_chunk(config: GeneratorConfig, streams: Streams, catalogue: Catalogue,
                   users: Users, first_user: int, end_user: int) -> Dict[str, np.ndarray]:
  """All plays of users [first_user, end_user), ordered by user then time.

  Returns arrays: user (int64 index), item (int64 index), ts (epoch ms), play_rate (float64),
  play_ms, duration_ms, intent (INTENT_* codes), affinity (AFFINITY_* codes, ground truth), and
  the hidden state: session_slot (int64: the index into the user's liked genres the play was
  chosen in) and session_start (bool).
  """
  counts = users.num_events[first_user:end_user]
  n = int(counts.sum())
  user = np.repeat(np.arange(first_user, end_user), counts)
  user_first_row = np.repeat(np.cumsum(counts) - counts, counts)
  position = np.arange(n) - user_first_row  # play index within the user
  intent = play_intents(config, streams, user, position)

  # Every play is worked out for each liked genre its session could be in; the feedback
  # (a skip under one genre, not under another) then picks the genre play by play.
  num_slots = config.liked_genres_per_user
  by_slot = [_play_in_slot(config, streams, catalogue, users, user, position, intent, slot)
             for slot in range(num_slots)]
  item_by_slot = np.stack([play['item'] for play in by_slot], axis=1)  # [n, slots]
  affinity_by_slot = np.stack([play['affinity'] for play in by_slot], axis=1)
  play_ms_by_slot = np.stack([play['play_ms'] for play in by_slot], axis=1)
  duration_ms = catalogue.duration_ms[item_by_slot]
  skipped_by_slot = play_ms_by_slot / duration_ms <= settings.NEG_THRESHOLD

  transitions = session_transitions(config, streams, users, user, position, intent,
                                    skipped_by_slot)
  session_slot = _slots_from_transitions(transitions.slot, position)
  previous_slot = np.concatenate([[0], session_slot[:-1]])
  rows = np.arange(n)
  session_start = transitions.start[rows, previous_slot]  # always True at a user's first play

  item = item_by_slot[rows, session_slot]
  play_ms = play_ms_by_slot[rows, session_slot]
  duration_ms = duration_ms[rows, session_slot]
  item_affinity = affinity_by_slot[rows, session_slot]
  ended_by_skip = transitions.ended_by_skip[rows, previous_slot]
  ts = _timestamps(config, streams, users, user, position, user_first_row, session_start,
                   ended_by_skip, play_ms)
  return dict(user=user, item=item, ts=ts, play_rate=play_ms / duration_ms, play_ms=play_ms,
              duration_ms=duration_ms, intent=intent.astype(np.int8), affinity=item_affinity,
              session_slot=session_slot, session_start=session_start)


def _play_in_slot(config, streams, catalogue, users, user, position, intent,
                  slot: int) -> Dict[str, np.ndarray]:
  """Item, play_ms and affinity [n] of every play if its session were in the user's liked genre
  `slot`."""
  session_slot = np.full(len(user), slot, dtype=np.int64)
  item = choose_items(config, streams, catalogue, users, user, position, intent, session_slot,
                      users.liked_genres[user, slot])
  return play_outcome(config, streams, catalogue, users, user, position, item)


def play_outcome(config: GeneratorConfig, streams: Streams, catalogue: Catalogue, users: Users,
                 user: np.ndarray, position: np.ndarray,
                 item: np.ndarray) -> Dict[str, np.ndarray]:
  """How each user's play `position` of `item` goes: item, play_ms and affinity [n], by the
  user's affinity for the song and the play-rate law (draws keyed by user and position).
  benchmarks/online.py plays the songs a system serves with it."""
  item_affinity = affinity(users, catalogue, user, item)
  play_rate = _play_rate(config, streams, item_affinity, user, position,
                         catalogue.item_genre[item])
  duration_ms = catalogue.duration_ms[item]
  play_ms = np.minimum(np.floor(play_rate * duration_ms + 0.5).astype(np.int64), duration_ms)
  return dict(item=item, play_ms=play_ms, affinity=item_affinity)


def taste_weights(users: Users, user: np.ndarray, progress: np.ndarray) -> np.ndarray:
  """[n, liked] the users' liked-genre weights at progress (0 at the first play, 1 at the last)."""
  return (users.liked_weights_start[user] * (1.0 - progress[:, None])
          + users.liked_weights_end[user] * progress[:, None])


def play_progress(users: Users, user: np.ndarray, position: np.ndarray) -> np.ndarray:
  """How far each play is through its user's plays: 0 at the first, 1 at the last."""
  return position / np.maximum(users.num_events[user] - 1, 1)


def other_slot_shares(weights: np.ndarray) -> np.ndarray:
  """[n, liked, liked]: row s gives the chance of each other liked genre when the session leaves
  genre s (the taste weights without s, renormalised; s itself when it is the only one)."""
  num_slots = weights.shape[1]
  others = np.broadcast_to(weights[:, None, :], weights.shape + (num_slots,)).copy()
  if num_slots == 1:
    return np.ones_like(others)
  others[:, np.arange(num_slots), np.arange(num_slots)] = 0.0
  return others / others.sum(axis=2, keepdims=True)


def _other_slot(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
  """[n, liked]: for each current slot s, another liked slot drawn by the taste weights with u."""
  cdf = np.cumsum(other_slot_shares(weights), axis=2)
  # <= skips the zero-width step of s itself; the clip keeps float rounding at the top end.
  drawn = np.minimum((cdf <= u[:, None, None]).sum(axis=2), weights.shape[1] - 1)
  last_other = np.where(np.arange(weights.shape[1]) == weights.shape[1] - 1,
                        weights.shape[1] - 2, weights.shape[1] - 1)
  return np.where(drawn == np.arange(weights.shape[1]), np.maximum(last_other, 0), drawn)


@dataclasses.dataclass
class Transitions:
  """How each play's session follows from the previous play's: row p, column s is for the
  previous play's session in liked slot s (ignored at a user's first play)."""
  slot: np.ndarray  # int64 [n, liked]: the slot of play p
  start: np.ndarray  # bool [n, liked]: whether play p starts a new session
  ended_by_skip: np.ndarray  # bool [n, liked]: it does only because the previous play's skip
  # ended the session


def session_transitions(config: GeneratorConfig, streams: Streams, users: Users,
                        user: np.ndarray, position: np.ndarray, intent: np.ndarray,
                        skipped_by_slot: np.ndarray) -> Transitions:
  """The session slot and start of every play as functions of the previous play's slot.

  skipped_by_slot [n, liked]: whether each play would be a skip in each slot.
  """
  num_slots = config.liked_genres_per_user
  first = position == 0
  weights = taste_weights(users, user, play_progress(users, user, position))
  skipped_before = np.concatenate([np.zeros((1, num_slots), bool), skipped_by_slot[:-1]])
  skipped_before[first] = False
  return next_sessions(config, streams, user, position, intent, first, skipped_before, weights)


def next_sessions(config: GeneratorConfig, streams: Streams, user: np.ndarray,
                  position: np.ndarray, intent: np.ndarray, first: np.ndarray,
                  skipped_before: np.ndarray, weights: np.ndarray) -> Transitions:
  """The session law of plays (user, position) given the previous play in each liked slot.

  first [n]: a user's first play (always a new session); skipped_before [n, liked]: whether the
  previous play was a skip, were its session in each slot; weights [n, liked]: the taste weights
  at the play. session_transitions applies it to generated plays; benchmarks/online.py to the
  plays of a simulated continuation.
  """
  num_slots = config.liked_genres_per_user
  # Sessions: a new one starts with probability 1/mean_length (always at a user's first play),
  # or after a skip that ends the session.
  ends = skipped_before & (streams.uniform('skip_ends_session', user, position)
                           < config.skip_ends_session)[:, None]
  random_start = first | (streams.uniform('session_start', user, position)
                          < 1.0 / config.mean_session_length)
  start = random_start[:, None] | ends
  # A new session's genre: drawn by the (drifting) taste weights, or kept from the previous
  # session. Inside a session, a skip may move it to another liked genre.
  slot_u = streams.uniform('session_genre', user, position)
  fresh_slot = (np.cumsum(weights, axis=1) < slot_u[:, None]).sum(axis=1)
  fresh_slot = np.minimum(fresh_slot, num_slots - 1)
  keep = ~first & (streams.uniform('session_keep_genre', user, position)
                   < config.same_genre_next_session)
  previous = np.broadcast_to(np.arange(num_slots), (len(user), num_slots))
  leaves = skipped_before & ~start & (streams.uniform('skip_leaves_genre', user, position)
                                      < config.skip_leaves_genre)[:, None]
  slot = np.where(start, np.where(keep[:, None], previous, fresh_slot[:, None]), previous)
  # Another genre is drawn only for the plays that may need one (the draws are keyed by play,
  # so this changes no value).
  rows = np.flatnonzero(leaves.any(axis=1))
  slot[rows] = np.where(leaves[rows], _other_slot(weights[rows], streams.uniform(
      'skip_genre', user[rows], position[rows])), slot[rows])
  # A genre request for another liked genre moves the session there from this play on.
  switches = (intent == INTENT_GENRE_REQUEST) & (
      streams.uniform('genre_request_switch', user, position) < config.genre_request_switch)
  rows = np.flatnonzero(switches)
  requested = _other_slot(weights[rows], streams.uniform('requested_genre', user[rows],
                                                         position[rows]))
  slot[rows] = np.take_along_axis(requested, slot[rows], axis=1)
  return Transitions(slot=slot.astype(np.int64), start=start,
                     ended_by_skip=ends & ~random_start[:, None])


def _slots_from_transitions(transitions: np.ndarray, position: np.ndarray) -> np.ndarray:
  """[n] the slot of every play, following each user's transitions from the first play.

  Play by play, one vectorised step per play index over all the users who have that many plays
  (users ordered by length, so they are a prefix). A user's first play does not depend on the
  slot before it.
  """
  slots = np.empty(len(position), np.int64)
  first_rows = np.flatnonzero(position == 0)
  if not len(first_rows):
    return slots
  lengths = np.diff(np.append(first_rows, len(position)))
  order = np.argsort(-lengths, kind='stable')
  starts, lengths = first_rows[order], lengths[order]
  # active[p]: how many users have more than p plays (lengths are descending).
  active = np.searchsorted(-lengths, -np.arange(lengths[0]), side='left')
  state = transitions[starts, 0]
  slots[starts] = state
  for p in range(1, lengths[0]):
    rows = starts[:active[p]] + p
    state = transitions[rows, state[:active[p]]]
    slots[rows] = state
  return slots


def intent_shares(config: GeneratorConfig) -> np.ndarray:
  shares = np.array([config.on_demand_share, config.genre_request_share, config.recommend_share])
  return shares / shares.sum()


def play_intents(config: GeneratorConfig, streams: Streams, user: np.ndarray,
                 position: np.ndarray) -> np.ndarray:
  """INTENT_* of each user's play `position`, by the intent shares, independent of the rest."""
  return _sample_categorical(np.cumsum(intent_shares(config)),
                             streams.uniform('intent', user, position))


def choose_items(config, streams, catalogue, users, user, position, intent, session_slot,
                 session_genre) -> np.ndarray:
  """The song of each play, by intent (see the docs for the story behind each branch)."""
  pick_u = streams.uniform('item_pick', user, position)
  is_favourite = streams.uniform('is_favourite', user, position) < config.favourite_share
  in_taste = streams.uniform('recommend_in_taste', user, position) < config.recommend_in_taste
  on_demand = intent == INTENT_ON_DEMAND
  recommend = intent == INTENT_RECOMMEND
  item = np.empty(len(user), dtype=np.int64)
  # on_demand: one of the user's favourites in the session genre, else a song of that genre
  # chosen by the user's own (flatter) popularity taste.
  rows = np.flatnonzero(on_demand & is_favourite)
  favourite_slot = np.floor(streams.uniform('favourite_slot', user[rows], position[rows])
                            * config.favourites_per_genre).astype(np.int64)
  item[rows] = users.favourites[user[rows], session_slot[rows], favourite_slot]
  rows = np.flatnonzero(on_demand & ~is_favourite)
  item[rows] = catalogue.personal.sample(session_genre[rows], pick_u[rows])
  # genre_request, and recommendations in taste: the system plays a hit of the session genre.
  rows = np.flatnonzero((intent == INTENT_GENRE_REQUEST) | (recommend & in_taste))
  item[rows] = catalogue.system.sample(session_genre[rows], pick_u[rows])
  # Other recommendations: a global hit of any genre.
  rows = np.flatnonzero(recommend & ~in_taste)
  item[rows] = _sample_categorical(catalogue.global_cdf, pick_u[rows])
  # Some recommendations are one of the user's disliked songs (popular songs they skip, which
  # the system keeps pushing), whatever the session genre.
  rows = np.flatnonzero(recommend & (streams.uniform('recommend_disliked', user, position)
                                     < config.recommend_disliked))
  disliked_slot = np.floor(streams.uniform('disliked_pick', user[rows], position[rows])
                           * config.disliked_items_per_user).astype(np.int64)
  item[rows] = users.disliked_items[user[rows], disliked_slot]
  return item


def neutral_means(config: GeneratorConfig, streams: Streams, user: np.ndarray,
                  genre: np.ndarray) -> np.ndarray:
  """Mean play rate of each user for songs of each genre they neither like nor dislike.

  Mild, consistent per (user, genre): a skip in such a genre predicts more skips in it.
  """
  return config.neutral_play_rate_mean + config.neutral_genre_spread * (
      2.0 * streams.uniform('neutral_taste', user, genre) - 1.0)


def _play_rate(config, streams, item_affinity, user, position, genre) -> np.ndarray:
  """Play rate from affinity plus noise: liked ~ 1, disliked < max_skip, neutral in between."""
  liked = np.clip(1.0 - config.mean_full_play_gap * streams.exponential('full_play', user,
                                                                         position), 0.0, 1.0)
  interrupted = streams.uniform('interrupted', user, position) < config.interrupt_rate
  liked = np.where(interrupted, streams.uniform('interrupt_point', user, position) * 0.9, liked)
  neutral = np.clip(neutral_means(config, streams, user, genre) + config.neutral_play_rate_sd
                    * streams.normal('neutral_play', user, position), 0.0, 1.0)
  skipped = np.minimum(config.mean_skip_play_rate * streams.exponential('skip_point', user,
                                                                        position),
                       config.max_skip_play_rate)
  tolerated = streams.uniform('tolerated', user, position) < config.tolerate_rate
  disliked = np.where(tolerated, neutral, skipped)
  return np.select([item_affinity == AFFINITY_LIKED, item_affinity == AFFINITY_DISLIKED],
                   [liked, disliked], neutral)


def _mean_session_gap_ms(config: GeneratorConfig, users: Users,
                         sessions_ended_by_skips: np.ndarray) -> np.ndarray:
  """Per user: the configured gap, shrunk so that the user's sessions (those that start at
  random, expected, and those skips ended, [U] counted) fit in the span."""
  mean_listening_ms = (config.min_duration_ms + config.max_duration_ms) / 2 * users.num_events
  left_ms = (config.start_ts_ms + config.span_days * _MS_PER_DAY - users.start_ts_ms
             - mean_listening_ms)
  sessions = 1 + (users.num_events - 1) / config.mean_session_length + sessions_ended_by_skips
  fitting_ms = left_ms / sessions - config.min_session_gap_minutes * 60_000
  return np.clip(fitting_ms, 0, config.mean_session_gap_hours * 3_600_000)


def _timestamps(config, streams, users, user, position, user_first_row, session_start,
                ended_by_skip, play_ms) -> np.ndarray:
  """Start time of each play: the previous play's heard time plus a few seconds inside a
  session; hours to days between sessions."""
  previous_play_ms = np.concatenate([[0], play_ms[:-1]])
  in_session_gap = previous_play_ms + np.floor(
      1000 + streams.uniform('gap_in_session', user, position)
      * (config.max_gap_in_session_s - 1) * 1000)
  session_gap = config.min_session_gap_minutes * 60_000 + np.floor(
      streams.exponential('gap_between_sessions', user, position)
      * _mean_session_gap_ms(config, users, np.bincount(
          user[ended_by_skip], minlength=config.num_users))[user])
  gap = np.where(session_start, session_gap, in_session_gap).astype(np.int64)
  gap[position == 0] = 0
  elapsed = np.cumsum(gap)
  return users.start_ts_ms[user] + elapsed - elapsed[user_first_row]
