"""trainer.export.build_ann_index on catalogues large enough for the partitioned index (20k):
exported when its measured recall is high enough, refused with the reason when it is not."""

import json
import os

import numpy as np
import pytest

from trainer import export

NUM_ITEMS, DIM, K = 20_000, 64, 100

scann = pytest.importorskip('scann')


def _write_vectors(directory, vectors):
  os.makedirs(directory, exist_ok=True)
  np.save(os.path.join(directory, export.ITEM_VECTORS_FILE), vectors.astype(np.float32))
  np.save(os.path.join(directory, export.ITEM_BIAS_FILE),
          np.zeros(len(vectors), np.float32))
  return directory


def _around(centres, count, rng):
  """count points around the given centres (genres), as a trained model's vectors cluster."""
  return centres[rng.integers(0, len(centres), count)] + 0.05 * rng.standard_normal(
      [count, DIM])


def test_clustered_vectors_get_an_index_that_recalls_what_exact_scoring_finds(tmp_path):
  rng = np.random.default_rng(0)
  centres = rng.standard_normal([200, DIM])
  directory = _write_vectors(str(tmp_path), _around(centres, NUM_ITEMS, rng))
  report = export.build_ann_index(directory, num_neighbors=K, min_recall=0.95)
  assert report.recall_at_k >= 0.95 and report.index_dir == os.path.join(directory, 'scann')
  with open(os.path.join(directory, export.ANN_REPORT_FILE)) as f:
    assert json.load(f)['recall_at_k'] == pytest.approx(report.recall_at_k)
  # The exported searcher answers like the one measured: check it on fresh queries, users of
  # the same genres. (Queries far from every genre, e.g. isotropic noise, get about 0.8.)
  searcher = scann.scann_ops_pybind.load_searcher(report.index_dir)
  database = np.load(os.path.join(directory, export.ITEM_VECTORS_FILE))
  database = np.concatenate([database, np.zeros([NUM_ITEMS, 1], np.float32)], axis=1)
  queries = np.concatenate([_around(centres, 50, np.random.default_rng(1)),
                            np.ones([50, 1])], axis=1).astype(np.float32)
  found, _ = searcher.search_batched(queries)
  assert export.recall_at_k(np.asarray(found), export.exact_top_k(queries, database, K)) >= 0.9


def test_random_vectors_give_a_low_recall_and_no_index(tmp_path):
  directory = _write_vectors(str(tmp_path), np.random.default_rng(0).standard_normal(
      [NUM_ITEMS, DIM]))
  report = export.build_ann_index(directory, num_neighbors=K, min_recall=0.95)
  assert report.index_dir is None and report.recall_at_k < 0.95
  assert 'not exported' in report.reason and f'{report.recall_at_k:.4f}' in report.reason
  assert not os.path.exists(os.path.join(directory, export.SCANN_DIR))
  with open(os.path.join(directory, export.ANN_REPORT_FILE)) as f:
    assert json.load(f)['index_dir'] is None


def test_recall_by_hand():
  exact = np.array([[1, 2, 3], [4, 5, 6]])
  found = np.array([[3, 2, 9], [6, 5, 4]])
  assert export.recall_at_k(found, exact) == pytest.approx(5 / 6)
  queries = np.array([[1.0, 0.0]], np.float32)
  database = np.array([[0.1, 5], [0.9, 0], [0.5, 1], [0.7, 0]], np.float32)
  np.testing.assert_array_equal(export.exact_top_k(queries, database, 3), [[1, 3, 2]])


def test_exact_top_k_scores_in_blocks_as_in_one_go(monkeypatch):
  rng = np.random.default_rng(3)
  queries, database = rng.standard_normal([7, 5]), rng.standard_normal([40, 5])
  whole = export.exact_top_k(queries, database, 6)
  monkeypatch.setattr(export, '_SCORES_PER_BLOCK', 2 * 40)  # two queries per block
  np.testing.assert_array_equal(export.exact_top_k(queries, database, 6), whole)
  np.testing.assert_array_equal(whole, np.argsort(-(queries @ database.T), axis=1)[:, :6])
