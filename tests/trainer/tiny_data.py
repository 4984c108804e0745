"""A tiny real Transform output for the trainer tests (conftest.py builds it once per session).

Tastes are learnable: items fall into genres, each user loves one genre (plays its songs to the
end) and skips songs of the next one. A history of songs from one genre is followed by a positive
target from that genre or by a skipped (negative) song of the next genre, so a trained model ranks
the user's genre on top. The examples go through the project's preprocessing_fn with tft_beam and
are written the way TFX's Transform writes them (gzipped TFRecords per split, transform_fn,
transformed_metadata and the raw metadata).
"""

import dataclasses
import os
import random
from typing import List

import apache_beam as beam
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata
from tensorflow_transform.tf_metadata import metadata_io
from tensorflow_transform.tf_metadata import schema_utils

from contract import features
from transform import preprocessing

RAW_FEATURE_SPEC = features.raw_feature_spec()
NUM_GENRES = 6
SONGS_PER_GENRE = 10
NUM_TRAIN_EXAMPLES = 600
NUM_EVAL_EXAMPLES = 150
HISTORY_LENGTH = 8
SEED = 11
# first_song of the drifted catalogue (conftest's drifted_transform): each genre's songs 0-2 are
# gone, 10-12 are new, 3-9 stay.
DRIFT = 3


@dataclasses.dataclass(frozen=True)
class TinyTransform:
  transform_output: str  # Transform's output directory (for tft.TFTransformOutput)
  train_files: List[str]  # globs, as TFX passes fn_args.train_files
  eval_files: List[str]
  raw_eval_examples: List[bytes]  # serialized raw tf.Examples of the eval split
  raw_eval_labels: List[int]


def song(genre: int, index: int) -> str:
  return f'genre{genre}_song{index}'


def _example(rng: random.Random, user: int, first_song: int) -> dict:
  genre = user % NUM_GENRES
  disliked = (genre + 1) % NUM_GENRES
  length = rng.randint(0, HISTORY_LENGTH)
  def any_song(of_genre: int) -> str:
    return song(of_genre, first_song + rng.randrange(SONGS_PER_GENRE))
  history = [any_song(genre) for _ in range(length)]
  if rng.random() < 0.7:
    target, play_rate, label = any_song(genre), 1.0, features.LABEL_POSITIVE
  else:
    target, play_rate, label = any_song(disliked), 0.1, features.LABEL_NEGATIVE
  return {
      features.USER_ID: f'user{user}', features.TS: 1000 * user + length,
      features.HISTORY_ITEM_ID: history,
      # Well played, so positive: the history's plays are targets too in training.
      features.HISTORY_PLAY_RATE: [rng.uniform(0.85, 1.0) for _ in history],
      features.HISTORY_INTENT: [rng.choice(features.INTENTS) for _ in history],
      features.HISTORY_TS: [1000 * user + position for position in range(length)],
      features.HISTORY_LABEL: [features.LABEL_POSITIVE] * length,
      features.ITEM_ID: target, features.PLAY_RATE: play_rate,
      features.INTENT: rng.choice(features.INTENTS), features.LABEL: label,
  }


def raw_examples(count: int, seed: int, first_song: int = 0) -> List[dict]:
  """Examples whose songs are numbered first_song .. first_song + SONGS_PER_GENRE - 1 in each
  genre: another first_song is a catalogue that drifted (songs gone, songs new)."""
  rng = random.Random(seed)
  return [_example(rng, rng.randrange(10 * NUM_GENRES), first_song) for _ in range(count)]


def serialize_raw(example: dict) -> bytes:
  coder = tft.coders.ExampleProtoCoder(schema_utils.schema_from_feature_spec(RAW_FEATURE_SPEC))
  return coder.encode(example)


def build_tiny_transform(root: str, first_song: int = 0) -> TinyTransform:
  """Runs the project's preprocessing_fn over generated examples into root; returns the paths."""
  metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(RAW_FEATURE_SPEC))
  transform_output = os.path.join(root, 'transform_graph')
  examples_dir = os.path.join(root, 'transformed_examples')
  train = raw_examples(NUM_TRAIN_EXAMPLES, SEED, first_song)
  evaluation = raw_examples(NUM_EVAL_EXAMPLES, SEED + 1, first_song)
  with beam.Pipeline() as pipeline:
    with tft_beam.Context(temp_dir=os.path.join(root, 'tft_tmp'), force_tf_compat_v1=False):
      raw_train = pipeline | 'Train' >> beam.Create(train)
      raw_eval = pipeline | 'Eval' >> beam.Create(evaluation)
      (transformed_train, transformed_metadata), transform_fn = (
          (raw_train, metadata) | tft_beam.AnalyzeAndTransformDataset(
              preprocessing.preprocessing_fn, output_record_batches=False))
      transformed_eval, _ = ((raw_eval, metadata), transform_fn) | tft_beam.TransformDataset(
          output_record_batches=False)
      _ = transform_fn | tft_beam.WriteTransformFn(transform_output)
      coder = tft.coders.ExampleProtoCoder(transformed_metadata.schema)
      for split, transformed in (('train', transformed_train), ('eval', transformed_eval)):
        _ = (transformed
             | f'Encode{split}' >> beam.Map(coder.encode)
             | f'Write{split}' >> beam.io.WriteToTFRecord(
                 os.path.join(examples_dir, f'Split-{split}', 'transformed_examples'),
                 file_name_suffix='.gz', num_shards=2))
  # As TFX's Transform component does, so that raw_feature_spec() answers.
  metadata_io.write_metadata(
      metadata, os.path.join(transform_output, tft.TFTransformOutput.RAW_METADATA_DIR))
  return TinyTransform(
      transform_output=transform_output,
      train_files=[os.path.join(examples_dir, 'Split-train', '*')],
      eval_files=[os.path.join(examples_dir, 'Split-eval', '*')],
      raw_eval_examples=[serialize_raw(example) for example in evaluation],
      raw_eval_labels=[example[features.LABEL] for example in evaluation])
