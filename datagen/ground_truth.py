"""The ground truth written beside the generated log, and its reader.

_ground_truth.json holds the generator's parameters, the genre names, the id formats, the output
files and statistics of the generated plays; _ground_truth.npz holds the per-item and per-user
arrays (item i is item_id `item_id(i)`, user u is `user_id(u)`).
"""

import dataclasses
import json
import os
from typing import Any, Dict, Sequence

import numpy as np

from datagen import model
from datagen.random_streams import Streams

# The leading underscore marks metadata, as in Hadoop's _SUCCESS: readers that take every file
# of a directory (PlayLogExampleGen among them) skip names starting with '_' or '.'.
JSON_NAME = '_ground_truth.json'
NPZ_NAME = '_ground_truth.npz'

ARRAY_DOCS = {
    'item_genre': 'int32 [items]: genre index of each item (names in "genres")',
    'item_popularity': 'float64 [items]: Zipf popularity, sums to 1',
    'item_duration_ms': 'int64 [items]: song length',
    'item_released_ts_ms': 'int64 [items]: no play before this epoch ms (catalogue drift)',
    'item_faded_ts_ms': 'int64 [items]: no play at or after this epoch ms (catalogue drift)',
    'user_num_events': 'int64 [users]: plays generated for each user',
    'user_liked_genres': 'int32 [users, liked]: liked genres',
    'user_liked_weights_start': 'float64 [users, liked]: taste weights at the first play',
    'user_liked_weights_end': 'float64 [users, liked]: taste weights at the last play',
    'user_disliked_genre': 'int32 [users]: disliked genre',
    'user_disliked_items': 'int64 [users, disliked]: disliked items (may repeat)',
    'user_favourites': 'int64 [users, liked, favourites]: favourites in each liked genre',
    'user_start_ts_ms': 'int64 [users]: time of the first play',
    'user_neutral_mean': 'float32 [users, genres]: mean play rate for songs the user neither '
                         'likes nor dislikes, by genre (meaningful for neutral genres only)',
}


def id_width(count: int) -> int:
  return max(6, len(str(max(count - 1, 0))))


def user_id(index: int, num_users: int) -> str:
  return f'u{index:0{id_width(num_users)}d}'


def item_id(index: int, num_items: int) -> str:
  return f'i{index:0{id_width(num_items)}d}'


def write(out_dir: str, config: model.GeneratorConfig, streams: Streams,
          catalogue: model.Catalogue, users: model.Users, output: Dict[str, Any],
          stats: Dict[str, Any]) -> str:
  """Writes the ground truth json and npz files; returns the json path."""
  user_neutral_mean = model.neutral_means(
      config, streams, np.arange(config.num_users)[:, None],
      np.arange(config.num_genres)[None, :]).astype(np.float32)
  np.savez(  # uncompressed: zlib would cost more time than the whole log's generation
      os.path.join(out_dir, NPZ_NAME),
      item_genre=catalogue.item_genre, item_popularity=catalogue.popularity,
      item_duration_ms=catalogue.duration_ms, item_released_ts_ms=catalogue.released_ts_ms,
      item_faded_ts_ms=catalogue.faded_ts_ms, user_num_events=users.num_events,
      user_liked_genres=users.liked_genres, user_liked_weights_start=users.liked_weights_start,
      user_liked_weights_end=users.liked_weights_end, user_disliked_genre=users.disliked_genre,
      user_disliked_items=users.disliked_items, user_favourites=users.favourites,
      user_start_ts_ms=users.start_ts_ms, user_neutral_mean=user_neutral_mean)
  document = {
      'generator': dataclasses.asdict(config),
      'genres': list(model.genre_names(config.num_genres)),
      'intents': list(model.INTENT_NAMES),
      'id_format': {
          'user_id': f'u + user index zero-padded to {id_width(config.num_users)} digits',
          'item_id': f'i + item index zero-padded to {id_width(config.num_items)} digits',
      },
      'output': output,
      'stats': stats,
      'arrays': {'file': NPZ_NAME, **ARRAY_DOCS},
  }
  path = os.path.join(out_dir, JSON_NAME)
  with open(path, 'w') as f:
    json.dump(document, f, indent=2, sort_keys=True)
    f.write('\n')
  return path


class GroundTruth:
  """The generator's truth about a generated log, with id lookups and affinities."""

  def __init__(self, out_dir: str):
    with open(os.path.join(out_dir, JSON_NAME)) as f:
      self.document = json.load(f)
    with np.load(os.path.join(out_dir, NPZ_NAME)) as arrays:
      self.arrays = {name: arrays[name] for name in arrays.files}
    self.config = model.GeneratorConfig(**self.document['generator'])
    self.genres = self.document['genres']

  def __getattr__(self, name: str) -> np.ndarray:
    arrays = self.__dict__.get('arrays', {})
    if name in arrays:
      return arrays[name]
    raise AttributeError(name)

  def user_index(self, user_ids: Sequence[str]) -> np.ndarray:
    return self._indices(user_ids, 'u', self.config.num_users)

  def item_index(self, item_ids: Sequence[str]) -> np.ndarray:
    return self._indices(item_ids, 'i', self.config.num_items)

  @staticmethod
  def _indices(ids: Sequence[str], prefix: str, count: int) -> np.ndarray:
    ids = np.asarray(ids, dtype=str)
    bad = ~np.char.startswith(ids, prefix)
    if bad.any():
      raise ValueError(f'not a generated id (expected prefix {prefix!r}): {ids[bad][0]!r}')
    indices = np.char.lstrip(ids, prefix).astype(np.int64)
    if len(indices) and (indices.min() < 0 or indices.max() >= count):
      raise ValueError(f'id out of range [0, {count}) in {ids[:3]}...')
    return indices

  def affinity(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> np.ndarray:
    """model.AFFINITY_* (1 liked, 0 neutral, -1 disliked) of each (user, item) pair."""
    users = model.Users(
        num_events=self.user_num_events, liked_genres=self.user_liked_genres,
        liked_weights_start=self.user_liked_weights_start,
        liked_weights_end=self.user_liked_weights_end, disliked_genre=self.user_disliked_genre,
        disliked_items=self.user_disliked_items, favourites=self.user_favourites,
        start_ts_ms=self.user_start_ts_ms)
    catalogue = _GenreOnly(self.item_genre)
    return model.affinity(users, catalogue, self.user_index(user_ids), self.item_index(item_ids))


@dataclasses.dataclass
class _GenreOnly:
  item_genre: np.ndarray


def load(out_dir: str) -> GroundTruth:
  return GroundTruth(out_dir)
