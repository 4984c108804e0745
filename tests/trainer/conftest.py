"""Shared fixtures of the trainer tests."""

import pytest

from tests.trainer import tiny_data


@pytest.fixture(scope='session')
def tiny_transform(tmp_path_factory) -> tiny_data.TinyTransform:
  """A real Transform output (project preprocessing_fn, tft_beam) of a few hundred examples."""
  return tiny_data.build_tiny_transform(str(tmp_path_factory.mktemp('tiny_transform')))


@pytest.fixture(scope='session')
def drifted_transform(tmp_path_factory) -> tiny_data.TinyTransform:
  """tiny_transform's data days later: the same tastes, a drifted catalogue (tiny_data.DRIFT)."""
  return tiny_data.build_tiny_transform(str(tmp_path_factory.mktemp('drifted_transform')),
                                       tiny_data.DRIFT)
