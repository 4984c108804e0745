"""A simulated online experiment (listening time per user) and responsiveness to a skip.

  python benchmarks/online.py --quality_dir WORK/seed_0 --users 300 --sessions 5 --seeds 0,1,2
  python benchmarks/online.py --log_dir LOG --model c=MODEL_DIR --model a=...  (any systems)
  python benchmarks/online.py --quick   (a tiny log and a tiny trained model: a smoke run)

--quality_dir is one seed's folder of `benchmarks/quality.py --work_dir DIR` (DIR/seed_N): its
generated log (log/) and every trained variant's exported model (train_<v>/model/Format-Serving,
the SavedModel the Pusher ships).

The users are the generator's own (datagen/model.py, rebuilt from the log's ground truth and
checked against it): a population of them (--users, drawn once) continues after its last play in
the log for --sessions sessions, under each system in turn, with the generator's laws:

  - each play's intent (on demand / genre request / recommend) by the generator's shares;
  - sessions: a play starts a new one with probability 1 / mean_session_length, or because the
    previous play was a skip (skip_ends_session); a new session keeps the last one's genre or
    draws one by the user's taste weights; a skip that does not end it leaves the genre
    (skip_leaves_genre); a genre request may switch it (genre_request_switch). The first
    simulated play starts a session (the user comes back), its genre drawn by the taste weights;
    the weights are the user's at their last generated play;
  - on-demand plays and genre requests are the user's own choice, by the generator's law
    (favourites, the user's own popularity law in the session genre, the genre's hits);
  - every song is played by the play-rate law of the user's affinity for it (liked: to the end
    but for interruptions; disliked genre or song: skipped early but for tolerance; neutral: the
    user's mean for that genre plus noise).

The system under test replaces the generator's recommender, and nothing else: the plays whose
intent is `recommend` (40 % by default) are the songs it serves. Consumption rule: on a
recommend play with nothing queued, the system is asked (the request carries the user's last
--history_length plays, log and simulation, with play rates and intents) and its top
--top_k is cut to a queue of --slate songs not yet played in this session (a service does not
replay a song within a session); the user plays the queue in order, one song per recommend play.
A play the user asks for (on demand, genre request) or a new session drops what is left of the
queue: those songs were served and left unplayed. Why: it is the generator's own story of where
recommended plays come from, so the system changes exactly the plays a recommender chose in the
log the models learnt from, and the user's own plays, session lengths and skips keep the law
the offline figures were measured under. A skip hurts twice, as in the generator: it hears a few
seconds instead of minutes, and it may end the session (fewer plays of any kind follow) or move
its genre. A better recommender therefore earns listening time by serving songs the user plays
through and by keeping sessions alive; playing a queue rather than one song per request lets a
skip cost the rest of the queue, not just the song.

Every random draw is the generator's counter-based stream of (user, play index), the play index
continuing after the user's generated plays (simulation seed s adds s x 10^6): each system meets
the same draws at the same play of the same user (common random numbers), so paired differences
between systems carry little simulation noise.

Per user: listening time (sum of the heard milliseconds), plays, plays played through
(rate >= 0.8), skips (<= 0.3), distinct songs, and the served songs' fate: played through,
partly played, skipped or left unplayed. Each system's mean over users with two 95 % intervals:
over users (the spread of the population, per-user means over the seeds) and over seeds (the
simulation's own noise); and each system against a reference (variant a if simulated, else most
popular) as a percentage of listening time per user, paired by user (bootstrap over users) and by
seed. The original work reports c +9.2 % over a in a live A/B test.

Responsiveness (--responsiveness_users users, their real histories): each system's best song
for the user's last history_length - 1 plays that is not among them (a new song served: a skip of
a song played many times before says little) is appended as a recommended play, once played through
(rate 1.0) and once skipped (the generator's mean skip rate); the top-K lists before and after
each are compared: the share of the top-K that leaves (skip against play-through, and skip
against before the song), the song's exact rank before and after each (the model's target_rank
signature), and the share of the top-K in its genre. A system blind to skips (variant a filters
them out of its history) leaves the top-K as it was before the song.

What it can say and what it cannot: the users are the generator's user model, not people. It
has no novelty or boredom, no position bias within the queue, no long-term effect of what it is
served on tastes, and it rewards exactly what the generator knows (affinity and the play-rate
law); the models learnt that law from the log, so the simulation tells how much of it each
system turns into listening time, not what people would do.
"""

import argparse
import dataclasses
import glob
import json
import os
import shlex
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from contract import features
from contract import settings
from datagen import ground_truth
from datagen import model as generator
from datagen.random_streams import Streams

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOST_POPULAR = 'most popular'
REPEAT = 'repeat (own history)'
COOCCURRENCE = 'co-occurrence (previous play)'
BASELINES = (MOST_POPULAR, REPEAT, COOCCURRENCE)
VARIANTS = ('a', 'b', 'c')
SEED_STRIDE = 1_000_000  # play indices of simulation seed s start at s x this after the log's
# A served song's fate.
THROUGH, PARTLY, SKIPPED, UNPLAYED = 0, 1, 2, 3
OUTCOMES = ('played through', 'partly played', 'skipped', 'left unplayed')
# Requests per call of a model's signature.
REQUESTS_PER_CALL = 512
QUICK = {'num_events': 3_000, 'num_items': 300, 'users': 20, 'sessions': 2, 'seeds': '0',
         'responsiveness_users': 20, 'train_steps': 20}
# --quick's model: the serving benchmark's small one (seconds to train), c's losses.
QUICK_HPARAMS = {'batch_size': 32, 'num_sampled': 32, 'hidden_dim': 16, 'item_embedding_dim': 8,
                 'num_layers': 1, 'num_heads': 2, 'ffn_dim': 32, 'variant': 'c'}


# --- The generator's world of a log ------------------------------------------------------------



# Songs a system is asked for per request (serving's top_k), of which a queue is served.
SONGS_PER_REQUEST = 50


@dataclasses.dataclass
class World:
  """The generator's catalogue and users of a generated log, and its plays."""
  config: generator.GeneratorConfig
  streams: Streams
  catalogue: generator.Catalogue
  users: generator.Users
  item_names: np.ndarray  # bytes [num_items]: the item id strings
  log: 'Log'
  log_dir: str


@dataclasses.dataclass
class Log:
  """The log's plays, grouped by user (generator indices) and ordered by time in each."""
  user: np.ndarray  # int64 [n]
  item: np.ndarray  # int64 [n]
  play_rate: np.ndarray  # float64 [n]
  intent: np.ndarray  # int8 [n]: generator.INTENT_* codes
  user_start: np.ndarray  # int64 [num_users + 1]: user u's rows are [user_start[u], [u + 1])


@dataclasses.dataclass
class History:
  """One request's plays, oldest first: generator item indices, play rates, intent codes."""
  items: List[int]
  rates: List[float]
  intents: List[int]

  def tail(self, length: int) -> 'History':
    return History(self.items[-length:], self.rates[-length:], self.intents[-length:])

  def plus(self, item: int, rate: float, intent: int) -> 'History':
    return History(self.items + [item], self.rates + [rate], self.intents + [intent])


def load_world(log_dir: str, overrides: Optional[Dict] = None) -> World:
  """The generator rebuilt from the log's ground truth (with overrides of its behaviour knobs for
  the simulation); refuses overrides that would change the catalogue or the users."""
  truth = ground_truth.load(log_dir)
  config = dataclasses.replace(truth.config, **(overrides or {}))
  config.validate()
  streams = Streams(config.seed)
  catalogue = generator.make_catalogue(config, streams)
  users = generator.make_users(config, streams, catalogue)
  for name, rebuilt in (('item_popularity', catalogue.popularity),
                        ('item_genre', catalogue.item_genre),
                        ('item_duration_ms', catalogue.duration_ms),
                        ('user_liked_genres', users.liked_genres),
                        ('user_favourites', users.favourites),
                        ('user_disliked_items', users.disliked_items)):
    if not np.array_equal(rebuilt, getattr(truth, name)):
      raise ValueError(f'{log_dir}: the rebuilt generator differs from the ground truth in {name}'
                       f' (overrides {overrides or {}} change the users or the catalogue, or the '
                       'truth was not written by this generator)')
  names = np.array([ground_truth.item_id(i, config.num_items).encode()
                    for i in range(config.num_items)])
  return World(config, streams, catalogue, users, names, read_log(log_dir, truth), log_dir)


def read_log(log_dir: str, truth: ground_truth.GroundTruth) -> Log:
  """Every play file of the generated log (any format the generator writes, day folders too)."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.compute as pc  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(os.path.join(log_dir, 'plays-*'))
                 + glob.glob(os.path.join(log_dir, '*', 'plays-*')))
  if not files:
    raise FileNotFoundError(f'no plays-* files in {log_dir}')
  tables = [_read_table(path) for path in files]
  table = pa.concat_tables([t.select([c for c in ('user_id', 'item_id', 'ts', 'play_ms',
                                                  'duration_ms', 'play_rate', 'intent')
                                      if c in t.column_names]) for t in tables])
  user = truth.user_index(table['user_id'].to_numpy().astype(str))
  item = truth.item_index(table['item_id'].to_numpy().astype(str))
  ts = table['ts'].to_numpy()
  if 'play_rate' in table.column_names:
    rate = table['play_rate'].to_numpy().astype(np.float64)
  else:  # as ingestion computes it
    rate = pc.divide(pc.cast(table['play_ms'], pa.float64()),
                     pc.cast(table['duration_ms'], pa.float64())).to_numpy()
  intents = table['intent'].to_numpy().astype(str)
  intent = np.full(len(intents), -1, np.int8)
  for code, name in enumerate(generator.INTENT_NAMES):
    intent[intents == name] = code
  order = np.lexsort((ts, user))
  user, item, rate, intent = user[order], item[order], np.clip(rate[order], 0.0, 1.0), \
      intent[order]
  user_start = np.searchsorted(user, np.arange(truth.config.num_users + 1))
  return Log(user, item, rate, intent, user_start)


def _read_table(path: str):
  import pyarrow.csv as pcsv  # pylint: disable=g-import-not-at-top
  import pyarrow.json as pjson  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  name = path[:-3] if path.endswith('.gz') else path
  if name.endswith('.parquet'):
    return pq.read_table(path)
  if name.endswith('.jsonl'):
    return pjson.read_json(path)
  return pcsv.read_csv(path)


def log_history(world: World, user: int, length: Optional[int] = None) -> History:
  """The user's plays in the log, oldest first (the last `length` of them)."""
  start, end = world.log.user_start[user], world.log.user_start[user + 1]
  if length is not None:
    start = max(start, end - length)
  return History(world.log.item[start:end].tolist(), world.log.play_rate[start:end].tolist(),
                 world.log.intent[start:end].tolist())


def population(world: World, count: int, seed: int = 0) -> np.ndarray:
  """count users of the log (all if fewer), drawn without replacement, in index order."""
  played = np.flatnonzero(np.diff(world.log.user_start) > 0)
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(played, size=min(count, len(played)), replace=False))


# --- Systems -------------------------------------------------------------------------------


class System:
  """Answers requests (histories) with its top k songs, as generator item indices."""
  name = ''

  def top_items(self, histories: Sequence[History], k: int) -> np.ndarray:
    """[B, k] int64 item indices, best first (-1 where it has fewer than k)."""
    raise NotImplementedError

  def ranks(self, histories: Sequence[History], targets: np.ndarray) -> np.ndarray:
    """[B] the exact 0-based rank of each target among the system's items (its size if
    unknown)."""
    raise NotImplementedError


class _LogCounts:
  """The baselines' id space: the log's songs by play count (id 0 the most played), as
  Transform's vocabulary orders a split's songs; V (the number of songs) is unknown."""

  def __init__(self, world: World):
    counts = np.bincount(world.log.item, minlength=world.config.num_items)
    played = np.flatnonzero(counts)
    self.id_to_item = played[np.lexsort((played, -counts[played]))]
    self.size = len(self.id_to_item)
    self.item_to_id = np.full(world.config.num_items, self.size, np.int64)
    self.item_to_id[self.id_to_item] = np.arange(self.size)

  def ids(self, items: Sequence[int]) -> np.ndarray:
    items = np.asarray(items, np.int64)
    return np.where(items >= 0, self.item_to_id[np.maximum(items, 0)], self.size)

  def items(self, ids: np.ndarray, k: int) -> np.ndarray:
    out = np.full(k, -1, np.int64)
    ids = np.asarray(ids, np.int64)[:k]
    out[:len(ids)] = self.id_to_item[ids]
    return out


class MostPopular(System):
  name = MOST_POPULAR

  def __init__(self, counts: _LogCounts):
    self.counts = counts

  def top_items(self, histories, k):
    return np.tile(self.counts.items(np.arange(min(k, self.counts.size)), k), (len(histories), 1))

  def ranks(self, histories, targets):
    from evaluation import baselines  # pylint: disable=g-import-not-at-top
    return baselines.popularity_ranks(self.counts.ids(targets), self.counts.size)


class Repeat(System):
  """evaluation.baselines' repeat ranking of the request's played-through plays."""
  name = REPEAT

  def __init__(self, counts: _LogCounts):
    self.counts = counts

  def _played(self, history: History) -> np.ndarray:
    return np.asarray(history.rates, np.float64) >= settings.POS_THRESHOLD

  def top_items(self, histories, k):
    from evaluation import baselines  # pylint: disable=g-import-not-at-top
    return np.stack([self.counts.items(baselines.repeat_top_items(
        self.counts.ids(h.items), self._played(h), k, self.counts.size), k) for h in histories])

  def ranks(self, histories, targets):
    from evaluation import baselines  # pylint: disable=g-import-not-at-top
    return baselines.repeat_ranks([self.counts.ids(h.items) for h in histories],
                                  [self._played(h) for h in histories],
                                  self.counts.ids(targets), self.counts.size)


class Cooccurrence(System):
  """evaluation.baselines' co-occurrence ranker, counted over the log's consecutive plays whose
  second play was played through."""
  name = COOCCURRENCE

  def __init__(self, counts: _LogCounts, world: World):
    from evaluation import baselines  # pylint: disable=g-import-not-at-top
    log = world.log
    pair = (log.user[1:] == log.user[:-1]) & (log.play_rate[1:] >= settings.POS_THRESHOLD)
    self.counts = counts
    self.ranker = baselines.CooccurrenceRanker(counts.size, counts.ids(log.item[:-1][pair]),
                                               counts.ids(log.item[1:][pair]))

  def _last(self, history: History) -> int:
    return int(self.counts.ids(history.items[-1:])[0]) if history.items else self.counts.size

  def top_items(self, histories, k):
    return np.stack([self.counts.items(self.ranker.top_items(self._last(h), k), k)
                     for h in histories])

  def ranks(self, histories, targets):
    return self.ranker.ranks([self._last(h) for h in histories], self.counts.ids(targets))


class ServedModel(System):
  """An exported SavedModel, asked through its serving_default signature (top items) and its
  target_rank signature, with serialized tf.Examples of the raw history as a client sends."""

  def __init__(self, name: str, model_dir: str, world: World):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self.name = name
    self.world = world
    serving = glob.glob(os.path.join(model_dir, 'Format-Serving'))
    self.path = serving[0] if serving else model_dir
    loaded = tf.saved_model.load(self.path)
    self._loaded = loaded  # keeps the signatures' variables alive
    self._top = loaded.signatures[features.SERVING_SIGNATURE]
    self._rank = loaded.signatures[features.TARGET_RANK_SIGNATURE]
    self._intents = [name.encode() for name in generator.INTENT_NAMES]
    self.calls = 0

  def _example(self, history: History, target: Optional[int] = None) -> bytes:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    feature = {
        features.HISTORY_ITEM_ID: tf.train.Feature(bytes_list=tf.train.BytesList(
            value=self.world.item_names[history.items].tolist())),
        features.HISTORY_PLAY_RATE: tf.train.Feature(float_list=tf.train.FloatList(
            value=history.rates)),
        features.HISTORY_INTENT: tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[self._intents[i] for i in history.intents])),
    }
    if target is not None:
      feature[features.ITEM_ID] = tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[self.world.item_names[target]]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

  def top_items(self, histories, k):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    out = np.full((len(histories), k), -1, np.int64)
    for start in range(0, len(histories), REQUESTS_PER_CALL):
      batch = [self._example(h) for h in histories[start:start + REQUESTS_PER_CALL]]
      self.calls += 1
      ids = self._top(**{features.SIGNATURE_INPUT: tf.constant(batch)})[
          features.TOP_ITEM_IDS].numpy()[:, :k]
      # The generator's ids are 'i' + the index: the vocabulary holds no other strings.
      out[start:start + len(batch), :ids.shape[1]] = np.char.lstrip(
          ids.astype(str), 'i').astype(np.int64)
    return out

  def ranks(self, histories, targets):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    ranks = []
    for start in range(0, len(histories), REQUESTS_PER_CALL):
      batch = [self._example(h, int(t)) for h, t in zip(
          histories[start:start + REQUESTS_PER_CALL], targets[start:start + REQUESTS_PER_CALL])]
      ranks.append(self._rank(**{features.SIGNATURE_INPUT: tf.constant(batch)})[
          features.TARGET_RANK].numpy())
    return np.concatenate(ranks).astype(np.int64) if ranks else np.empty(0, np.int64)


def baseline_systems(world: World) -> List[System]:
  counts = _LogCounts(world)
  return [MostPopular(counts), Repeat(counts), Cooccurrence(counts, world)]


# --- The simulation ------------------------------------------------------------------------


@dataclasses.dataclass
class Simulation:
  """One system's run over the population for one seed: per-user figures and the records."""
  system: str
  seed: int
  users: np.ndarray  # [U] generator user indices
  per_user: Dict[str, np.ndarray]  # name -> [U]
  plays: Dict[str, np.ndarray]  # one row per play (see simulate)
  served: Dict[str, np.ndarray]  # one row per served song
  requests: int
  fallbacks: int  # recommend plays the system had no unplayed song for (the generator's own)


def simulate(world: World, system: System, users: np.ndarray, sessions: int, seed: int,
             slate: int = 5, top_k: int = SONGS_PER_REQUEST,
             history_length: int = settings.HISTORY_LENGTH) -> Simulation:
  """Continues `users` for `sessions` sessions each, the system serving the recommend plays
  (the module docstring's rule). Returns per-user figures and every play and served song:

  plays: user (index into users), item, play_ms, duration_ms, play_rate, intent, session
    (1-based), serve (row of `served`, -1 for the user's own choices);
  served: user, item, request (the request's number), outcome (THROUGH ... UNPLAYED).
  """
  config, streams, catalogue, people = world.config, world.streams, world.catalogue, world.users
  num = len(users)
  num_slots = config.liked_genres_per_user
  base = people.num_events[users] + seed * SEED_STRIDE
  histories = [log_history(world, int(u), history_length) for u in users]
  count = np.zeros(num, np.int64)  # simulated plays so far
  session = np.zeros(num, np.int64)  # sessions started
  previous_skip = np.zeros(num, bool)
  previous_slot = np.zeros(num, np.int64)
  active = np.ones(num, bool)
  queues: List[List[int]] = [[] for _ in range(num)]  # rows of served, next first
  in_session: List[set] = [set() for _ in range(num)]
  plays = {name: [] for name in ('user', 'item', 'play_ms', 'duration_ms', 'intent', 'session',
                                 'serve')}
  served = {name: [] for name in ('user', 'item', 'request')}
  outcome: List[int] = []
  requests = fallbacks = 0

  def drop_queue(j: int) -> None:
    queues[j].clear()  # their outcome stays UNPLAYED

  while active.any():
    rows = np.flatnonzero(active)
    user = users[rows]
    position = base[rows] + count[rows]
    intent = generator.play_intents(config, streams, user, position)
    first = count[rows] == 0
    weights = generator.taste_weights(people, user, np.ones(len(rows)))
    skipped_before = np.repeat((previous_skip[rows] & ~first)[:, None], num_slots, axis=1)
    transitions = generator.next_sessions(config, streams, user, position, intent, first,
                                          skipped_before, weights)
    here = np.arange(len(rows))
    slot = transitions.slot[here, previous_slot[rows]]
    starts = transitions.start[here, previous_slot[rows]]
    for j in rows[starts]:
      session[j] += 1
      drop_queue(j)
      in_session[j].clear()
    done = session[rows] > sessions
    active[rows[done]] = False
    keep = ~done
    rows, user, position, intent, slot = (rows[keep], user[keep], position[keep], intent[keep],
                                          slot[keep])
    if not len(rows):
      break
    own = generator.choose_items(config, streams, catalogue, people, user, position, intent,
                                 slot, people.liked_genres[user, slot])
    item = own.copy()
    serve = np.full(len(rows), -1, np.int64)
    recommend = intent == generator.INTENT_RECOMMEND
    for i in np.flatnonzero(~recommend):
      drop_queue(rows[i])  # the user takes over
    asking = [i for i in np.flatnonzero(recommend) if not queues[rows[i]]]
    if asking:
      top = system.top_items([histories[rows[i]].tail(history_length) for i in asking], top_k)
      for i, answer in zip(asking, top):
        j = rows[i]
        requests += 1
        for song in answer:
          if len(queues[j]) == slate:
            break
          if song >= 0 and song not in in_session[j]:
            queues[j].append(len(outcome))
            served['user'].append(j)
            served['item'].append(int(song))
            served['request'].append(requests)
            outcome.append(UNPLAYED)
    for i in np.flatnonzero(recommend):
      j = rows[i]
      if queues[j]:
        serve[i] = queues[j].pop(0)
        item[i] = served['item'][serve[i]]
      else:
        fallbacks += 1  # nothing left to serve: the generator's own recommender plays
    heard = generator.play_outcome(config, streams, catalogue, people, user, position, item)
    duration = catalogue.duration_ms[item]
    rate = heard['play_ms'] / duration
    for i, j in enumerate(rows):
      song = int(item[i])
      histories[j] = histories[j].plus(song, float(rate[i]), int(intent[i]))
      if len(histories[j].items) > 4 * history_length:
        histories[j] = histories[j].tail(history_length)
      in_session[j].add(song)
      if serve[i] >= 0:
        outcome[serve[i]] = (THROUGH if rate[i] >= settings.POS_THRESHOLD else
                             SKIPPED if rate[i] <= settings.NEG_THRESHOLD else PARTLY)
    plays['user'].append(rows)
    plays['item'].append(item)
    plays['play_ms'].append(heard['play_ms'])
    plays['duration_ms'].append(duration)
    plays['intent'].append(intent.astype(np.int8))
    plays['session'].append(session[rows])
    plays['serve'].append(serve)
    previous_skip[rows] = rate <= settings.NEG_THRESHOLD
    previous_slot[rows] = slot
    count[rows] += 1

  plays = {name: (np.concatenate(parts) if parts else np.empty(0, np.int64))
           for name, parts in plays.items()}
  plays['play_rate'] = plays['play_ms'] / np.maximum(plays['duration_ms'], 1)
  served = {name: np.asarray(values, np.int64) for name, values in served.items()}
  served['outcome'] = np.asarray(outcome, np.int64)
  return Simulation(system.name, seed, users, per_user_figures(plays, served, num), plays,
                    served, requests, fallbacks)


def per_user_figures(plays: Dict[str, np.ndarray], served: Dict[str, np.ndarray],
                     num: int) -> Dict[str, np.ndarray]:
  """The per-user figures, each summed from the play and serve records."""
  user = plays['user']
  rate = plays['play_rate']
  def per_user(weights=None, rows=None):
    index = user if rows is None else user[rows]
    w = None if weights is None else (weights if rows is None else weights[rows])
    return np.bincount(index, weights=w, minlength=num)
  distinct = np.zeros(num)
  if len(user):
    pairs = np.unique(user * (int(plays['item'].max()) + 1) + plays['item'])
    distinct = np.bincount(pairs // (int(plays['item'].max()) + 1), minlength=num).astype(float)
  from_system = plays['serve'] >= 0
  figures = {
      'listening_min': per_user(plays['play_ms'].astype(np.float64)) / 60_000,
      'plays': per_user(),
      'played_through': per_user(rows=rate >= settings.POS_THRESHOLD),
      'skips': per_user(rows=rate <= settings.NEG_THRESHOLD),
      'distinct_songs': distinct,
      'sessions': _max_per_user(user, plays['session'], num),
      'served_listening_min': per_user(plays['play_ms'].astype(np.float64),
                                       rows=from_system) / 60_000,
      'served': np.bincount(served['user'], minlength=num).astype(float),
  }
  for code, name in enumerate(OUTCOMES):
    figures[f'served {name}'] = np.bincount(served['user'][served['outcome'] == code],
                                            minlength=num).astype(float)
  return figures


def _max_per_user(user: np.ndarray, values: np.ndarray, num: int) -> np.ndarray:
  out = np.zeros(num)
  np.maximum.at(out, user, values)
  return out


# --- Responsiveness ------------------------------------------------------------------------


def responsiveness(world: World, system: System, users: np.ndarray,
                   top_k: int = SONGS_PER_REQUEST,
                   history_length: int = settings.HISTORY_LENGTH) -> Dict[str, np.ndarray]:
  """Per user: the top-K before, after the system's best song that is new to the request (not in
  its history) is played through, and after it is skipped, the same history before it."""
  before = [log_history(world, int(u), history_length - 1) for u in users]
  top_before = system.top_items(before, top_k)
  song = np.array([next((int(s) for s in top if s >= 0 and s not in set(h.items)), -1)
                   for h, top in zip(before, top_before)], np.int64)
  kept = song >= 0
  before, song, top_before = [h for h, k in zip(before, kept) if k], song[kept], top_before[kept]
  skip_rate = min(world.config.mean_skip_play_rate, settings.NEG_THRESHOLD)
  through = [h.plus(int(s), 1.0, generator.INTENT_RECOMMEND) for h, s in zip(before, song)]
  skipped = [h.plus(int(s), skip_rate, generator.INTENT_RECOMMEND) for h, s in zip(before, song)]
  top_through = system.top_items(through, top_k)
  top_skipped = system.top_items(skipped, top_k)
  genre = world.catalogue.item_genre
  song_genre = genre[song][:, None]
  def genre_share(top):
    return ((genre[np.maximum(top, 0)] == song_genre) & (top >= 0)).mean(axis=1)
  def leaving(first, second):
    return 1.0 - np.array([len(np.intersect1d(a[a >= 0], b[b >= 0])) for a, b in
                           zip(first, second)]) / top_k
  return {
      'leaves': leaving(top_through, top_skipped),  # skip against play-through
      'leaves_after_skip': leaving(top_before, top_skipped),  # skip against no play
      'rank_before': system.ranks(before, song),
      'rank_through': system.ranks(through, song),
      'rank_skipped': system.ranks(skipped, song),
      'genre_before': genre_share(top_before),
      'genre_through': genre_share(top_through),
      'genre_skipped': genre_share(top_skipped),
  }


# --- Statistics and tables -----------------------------------------------------------------

# Two-sided 97.5 % quantiles of Student's t by degrees of freedom (1.96 beyond).
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228}


def interval(values: Sequence[float]) -> float:
  """Half width of the 95 % interval of the mean of values (t for few values); nan for one."""
  values = np.asarray(values, np.float64)
  if len(values) < 2:
    return float('nan')
  t = _T975.get(len(values) - 1, 1.96)
  return float(t * values.std(ddof=1) / np.sqrt(len(values)))


def percent_change(system: np.ndarray, reference: np.ndarray, resamples: int = 2000,
                   seed: int = 0) -> Tuple[float, float, float]:
  """100 x (mean(system) / mean(reference) - 1) over paired users, with its 95 % bootstrap
  interval over users (low, high)."""
  point = 100.0 * (system.mean() / reference.mean() - 1.0)
  rng = np.random.default_rng(seed)
  picks = rng.integers(0, len(system), size=(resamples, len(system)))
  boot = 100.0 * (system[picks].mean(axis=1) / reference[picks].mean(axis=1) - 1.0)
  return point, float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def _fmt(value: float, digits: int = 1) -> str:
  return 'n/a' if value != value else f'{value:.{digits}f}'


def online_table(runs: Dict[str, List[Simulation]], reference: str) -> List[str]:
  """Markdown rows: each system's figures per user, with intervals over users and seeds."""
  lines = [f'| system | listening min/user | 95 % CI users | 95 % CI seeds | vs {reference} | '
           '95 % CI users | 95 % CI seeds | of it from served songs | plays | played through | '
           'skips | distinct songs | served: through / partly / skipped / unplayed |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
  ref_user = np.mean([r.per_user['listening_min'] for r in runs[reference]], axis=0)
  ref_seed = [r.per_user['listening_min'].mean() for r in runs[reference]]
  for name, sims in runs.items():
    def user_means(key):
      return np.mean([s.per_user[key] for s in sims], axis=0)
    listening = user_means('listening_min')
    seed_means = [s.per_user['listening_min'].mean() for s in sims]
    if name == reference:
      change = '—'
      change_users = change_seeds = '—'
    else:
      point, low, high = percent_change(listening, ref_user)
      change = f'{point:+.1f} %'
      change_users = f'[{low:+.1f}, {high:+.1f}]'
      by_seed = [100 * (m / r - 1) for m, r in zip(seed_means, ref_seed)]
      change_seeds = f'± {_fmt(interval(by_seed))}'
    served = user_means('served').sum()
    fates = ' / '.join(f'{user_means(f"served {o}").sum() / max(served, 1):.2f}'
                       for o in OUTCOMES)
    lines.append(
        f'| {name} | {listening.mean():.1f} | ± {_fmt(interval(listening))} | '
        f'± {_fmt(interval(seed_means))} | {change} | {change_users} | {change_seeds} | '
        f'{user_means("served_listening_min").mean():.1f} | {user_means("plays").mean():.1f} | '
        f'{user_means("played_through").mean():.1f} | '
        f'{user_means("skips").mean():.1f} | {user_means("distinct_songs").mean():.1f} | '
        f'{fates} |')
  return lines


def responsiveness_table(figures: Dict[str, Dict[str, np.ndarray]], top_k: int) -> List[str]:
  lines = [f'| system | users | top-{top_k} leaving: skip vs play-through | skip vs before | '
           'the song\'s rank (median): before / play-through / skip | in the top 10: before / '
           f'play-through / skip | its genre in the top {top_k}: before / play-through / skip |',
           '|---|---|---|---|---|---|---|']
  for name, f in figures.items():
    lines.append(
        f'| {name} | {len(f["leaves"])} | {f["leaves"].mean():.2f} | '
        f'{f["leaves_after_skip"].mean():.2f} | '
        + ' / '.join(f'{np.median(f[k]):.0f}' for k in ('rank_before', 'rank_through',
                                                        'rank_skipped')) + ' | '
        + ' / '.join(f'{(f[k] < 10).mean():.2f}' for k in ('rank_before', 'rank_through',
                                                          'rank_skipped')) + ' | '
        + ' / '.join(f'{f[k].mean():.2f}' for k in ('genre_before', 'genre_through',
                                                    'genre_skipped')) + ' |')
  return lines


def load_average_text() -> str:
  return '{:.2f} / {:.2f} / {:.2f}'.format(*os.getloadavg())


def write_records(directory: str, simulation: Simulation) -> str:
  """The run's records as an npz (plays_*, served_*, per_user_*, users)."""
  os.makedirs(directory, exist_ok=True)
  slug = ''.join(c if c.isalnum() else '_' for c in simulation.system).strip('_')
  path = os.path.join(directory, f'{slug}-seed{simulation.seed}.npz')
  arrays = {'users': simulation.users}
  arrays.update({f'plays_{k}': v for k, v in simulation.plays.items()})
  arrays.update({f'served_{k}': v for k, v in simulation.served.items()})
  arrays.update({f'per_user_{k}': v for k, v in simulation.per_user.items()})
  np.savez(path, **arrays)
  return path


# --- A tiny trained model (--quick) --------------------------------------------------------


def build_tiny_model(log_dir: str, out_dir: str, train_steps: int, seed: int = 0) -> str:
  """Trains and exports a small model on the log the way benchmarks/serving.py does (the real
  example builder, Transform in this process, the Trainer's loop, the export); returns its
  directory (a SavedModel with the serving signatures)."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  from benchmarks import serving  # pylint: disable=g-import-not-at-top
  truth = ground_truth.load(log_dir)
  log = read_log(log_dir, truth)
  config = truth.config
  names = np.array([ground_truth.item_id(i, config.num_items) for i in range(config.num_items)])
  users = np.array([ground_truth.user_id(u, config.num_users) for u in range(config.num_users)])
  rows = len(log.user)
  plays = pa.table({
      'user_id': pa.array(users[log.user]), 'item_id': pa.array(names[log.item]),
      'ts': pa.array(np.arange(rows, dtype=np.int64)),  # the order within a user is what counts
      'play_rate': pa.array(log.play_rate),
      'intent': pa.array(np.asarray(generator.INTENT_NAMES)[log.intent]),
      'seq': pa.array(np.zeros(rows, np.int64)), 'file_index': pa.array(np.zeros(rows, np.int32)),
      'line': pa.array(np.arange(1, rows + 1, dtype=np.int64))})
  hparams = settings.HParams(**dict(QUICK_HPARAMS, train_steps=train_steps, seed=seed,
                                    steps_per_checkpoint=train_steps))
  train, _ = serving.play_examples(plays, hparams)
  transform_dir, train_files = serving.run_transform(train, [], os.path.join(out_dir, 'transform'))
  transform_output = tft.TFTransformOutput(transform_dir)
  model = serving.trained_model(transform_output, train_files, hparams,
                                os.path.join(out_dir, 'model_run'))
  export_dir = os.path.join(out_dir, 'model', 'Format-Serving')
  serving.exported_model(model, transform_output, hparams, export_dir)
  return os.path.join(out_dir, 'model')


# --- Command line --------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--quality_dir', help='one seed of a quality.py --work_dir: DIR/seed_N; '
                      'its log/ and every train_<variant>/model found')
  parser.add_argument('--log_dir', help='the generated log (default: QUALITY_DIR/log)')
  parser.add_argument('--model', action='append', default=[], metavar='NAME=DIR',
                      help='a system: an exported model (a Format-Serving folder or its parent); '
                      'repeatable')
  parser.add_argument('--baselines', default=','.join(BASELINES),
                      help='comma-separated baseline systems (empty: none)')
  parser.add_argument('--users', type=int, default=300, help='population size')
  parser.add_argument('--sessions', type=int, default=5, help='sessions per user')
  parser.add_argument('--seeds', default='0,1,2', help='simulation seeds (comma-separated)')
  parser.add_argument('--slate', type=int, default=5, help='songs queued per request')
  parser.add_argument('--top_k', type=int, default=SONGS_PER_REQUEST,
                      help='songs asked of a system per request,'
                      ' and the K of the responsiveness lists')
  parser.add_argument('--history_length', type=int, default=settings.HISTORY_LENGTH,
                      help='plays a request carries')
  parser.add_argument('--responsiveness_users', type=int, default=None,
                      help='users of the responsiveness measurement (default: --users)')
  parser.add_argument('--set', action='append', default=[], metavar='KNOB=VALUE',
                      help="override a generator knob of the users' behaviour (e.g. "
                      'skip_ends_session=0.2); knobs that change the users are refused')
  parser.add_argument('--records', default=None,
                      help='write every run\'s play and serve records (npz) to this folder')
  parser.add_argument('--work_dir', default=None,
                      help='--quick: where the tiny log and model go (kept); default a temp dir')
  parser.add_argument('--quick', action='store_true',
                      help='a tiny generated log and a tiny trained model (c), a few users: a '
                      'smoke run whose figures mean nothing')
  args = parser.parse_args(argv)
  if args.quick:
    for name, value in QUICK.items():
      if name in ('num_events', 'num_items', 'train_steps'):
        continue
      if getattr(args, name) == parser.get_default(name):
        setattr(args, name, value)
  args.seeds = [int(s) for s in str(args.seeds).split(',') if s != '']
  args.baselines = [b.strip() for b in args.baselines.split(',') if b.strip()]
  unknown = set(args.baselines) - set(BASELINES)
  if unknown:
    parser.error(f'unknown baselines {sorted(unknown)}; known: {list(BASELINES)}')
  args.overrides = {}
  for item in args.set:
    name, _, value = item.partition('=')
    fields = {f.name: f for f in dataclasses.fields(generator.GeneratorConfig)}
    if name not in fields:
      parser.error(f'--set {item}: unknown generator knob {name!r}')
    args.overrides[name] = type(getattr(generator.GeneratorConfig(), name))(json.loads(value))
  models = {}
  for item in args.model:
    name, _, path = item.partition('=')
    if not name or not path:
      parser.error(f'--model {item!r}: expected NAME=DIR')
    models[name] = path
  if args.quality_dir:
    args.log_dir = args.log_dir or os.path.join(args.quality_dir, 'log')
    for variant in VARIANTS:
      path = os.path.join(args.quality_dir, f'train_{variant}', 'model')
      if variant not in models and os.path.isdir(path):
        models[variant] = path
  args.models = dict(sorted(models.items()))
  if not args.quick and not args.log_dir:
    parser.error('give --quality_dir, --log_dir or --quick')
  if args.responsiveness_users is None:
    args.responsiveness_users = args.users
  return args


def command_line(args: argparse.Namespace) -> str:
  parts = ['python benchmarks/online.py']
  if args.quick:
    parts.append('--quick')
  if args.quality_dir:
    parts.append(f'--quality_dir {shlex.quote(args.quality_dir)}')
  elif not args.quick:
    parts.append(f'--log_dir {shlex.quote(args.log_dir)}')
  parts += [f'--model {name}={shlex.quote(path)}' for name, path in args.models.items()
            if not args.quick and not (args.quality_dir and path == os.path.join(
                args.quality_dir, f'train_{name}', 'model'))]
  if args.baselines != list(BASELINES):
    parts.append(f'--baselines {shlex.quote(",".join(args.baselines))}')
  parts += [f'--users {args.users}', f'--sessions {args.sessions}',
            f'--seeds {",".join(map(str, args.seeds))}', f'--slate {args.slate}',
            f'--top_k {args.top_k}', f'--responsiveness_users {args.responsiveness_users}']
  parts += [f'--set {name}={json.dumps(value)}' for name, value in args.overrides.items()]
  return ' '.join(parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  started = time.time()
  print(f'load average at the start: {load_average_text()} (1 / 5 / 15 min)', flush=True)
  if args.quick:
    from datagen import generate  # pylint: disable=g-import-not-at-top
    work_dir = args.work_dir or tempfile.mkdtemp(prefix='online_quick_')
    args.log_dir = os.path.join(work_dir, 'log')
    generate.generate(args.log_dir, num_events=QUICK['num_events'],
                      num_items=QUICK['num_items'], seed=0, fmt='csv', overwrite=True)
    print(f'[quick] training a tiny model (c) in {work_dir} ...', flush=True)
    args.models = {'c': build_tiny_model(args.log_dir, os.path.join(work_dir, 'tiny_c'),
                                         QUICK['train_steps'])}
    args.records = args.records or os.path.join(work_dir, 'records')
  world = load_world(args.log_dir, args.overrides)
  systems = [s for s in baseline_systems(world) if s.name in args.baselines]
  systems += [ServedModel(name, path, world) for name, path in args.models.items()]
  if not systems:
    raise SystemExit('no systems to simulate')
  users = population(world, args.users)
  reference = 'a' if 'a' in args.models else systems[0].name
  config = world.config
  print(f'log {args.log_dir}: {len(world.log.user):,} plays, {config.num_users:,} users, '
        f'{config.num_items:,} songs; {len(users)} users x {args.sessions} sessions, seeds '
        f'{args.seeds}; systems: {", ".join(s.name for s in systems)}', flush=True)
  knobs = ('skip_ends_session', 'skip_leaves_genre', 'genre_request_switch', 'recommend_share',
           'mean_session_length')
  print('users\' behaviour: ' + ', '.join(f'{k} {getattr(config, k)}' for k in knobs)
        + (f' (overridden: {args.overrides})' if args.overrides else ' (the log\'s own)'),
        flush=True)
  runs: Dict[str, List[Simulation]] = {}
  for system in systems:
    runs[system.name] = []
    for seed in args.seeds:
      tick = time.time()
      run = simulate(world, system, users, args.sessions, seed, args.slate, args.top_k,
                     args.history_length)
      runs[system.name].append(run)
      if args.records:
        write_records(args.records, run)
      print(f'  {system.name}, seed {seed}: {len(run.plays["user"]):,} plays, {run.requests:,} '
            f'requests, {run.fallbacks} fallbacks, {time.time() - tick:.1f} s', flush=True)
  rusers = population(world, args.responsiveness_users)
  moved = {}
  for system in systems:
    moved[system.name] = responsiveness(world, system, rusers, args.top_k, args.history_length)
  print()
  if args.quick:
    print('(--quick: a smoke run; the figures are not meaningful)')
  print(f'Online (simulated): {len(users)} users x {args.sessions} sessions, seeds {args.seeds}, '
        f'queue {args.slate} of each top {args.top_k}; per user, means over users')
  print('\n'.join(online_table(runs, reference)))
  print()
  print(f'Responsiveness: the top {args.top_k} after the system\'s best new song (not in the '
        f'history) is skipped against played through ({len(rusers)} users\' real histories)')
  print('\n'.join(responsiveness_table(moved, args.top_k)))
  print()
  print(f'command: {command_line(args)}')
  print(f'load average {load_average_text()} (1 / 5 / 15 min) after {time.time() - started:.0f} s')
  return 0


if __name__ == '__main__':
  sys.exit(main())
