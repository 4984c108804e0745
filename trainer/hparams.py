"""Hyper-parameters of the DeepMatch trainer, with the defaults the design describes."""

import dataclasses
import json
from typing import Any, Dict

VARIANTS = ('a', 'b', 'c')
SAMPLERS = ('log_uniform', 'uniform', 'learned_unigram', 'fixed_unigram')
USER_VECTOR_MODES = ('last', 'mean')
# lazy_adam updates only the item-table rows a batch touches (trainer/optimizers.py); adam is
# tf_keras Adam, whose work per step grows with the catalogue.
OPTIMIZERS = ('lazy_adam', 'adam')


@dataclasses.dataclass(frozen=True)
class HParams:
  """Every size and switch of the model, the losses and the training loop.

  `variant` sets the three flags the design names (feedback_features, negative_loss, history_filter):
    a: history keeps only well-played songs, no feedback features, positive loss only;
    b: a + play-rate and intent features, full history;
    c: b + the negative-feedback loss (the default).
  """
  variant: str = 'c'
  # Model sizes.
  history_length: int = 50
  item_embedding_dim: int = 32  # E: the factorized V x E table
  hidden_dim: int = 64  # H: E -> H projection, attention width, user and item vector size
  num_layers: int = 2
  num_heads: int = 2
  ffn_dim: int = 128
  dropout: float = 0.1
  user_vector: str = 'last'  # 'last' real position or masked 'mean'
  # Losses.
  num_sampled: int = 256
  sampler: str = 'log_uniform'
  unique_gather: bool = True
  neg_weight: float = 1.0
  pos_threshold: float = 0.8  # history_filter of variant a keeps plays with rate >= this
  # Training loop.
  # Sequences (training windows) per step, each training up to history_length + 1 plays: 32 gives
  # about 1,600 targets per update; more per step buys fewer updates per second, which is what
  # time-to-quality follows (docs/results.md).
  batch_size: int = 32
  optimizer: str = 'lazy_adam'
  learning_rate: float = 1e-3
  train_steps: int = 2000
  steps_per_checkpoint: int = 500
  steps_per_log: int = 100
  seed: int = 7
  # Parameter-server sharding: number of shards of each item table (1 means unsharded).
  num_shards: int = 1
  # Serving.
  top_k: int = 100

  def __post_init__(self):
    _check_choice('variant', self.variant, VARIANTS)
    _check_choice('sampler', self.sampler, SAMPLERS)
    _check_choice('user_vector', self.user_vector, USER_VECTOR_MODES)
    _check_choice('optimizer', self.optimizer, OPTIMIZERS)
    if self.hidden_dim % self.num_heads:
      raise ValueError(f'hidden_dim={self.hidden_dim} must be divisible by num_heads={self.num_heads}')

  @property
  def feedback_features(self) -> bool:
    return self.variant in ('b', 'c')

  @property
  def negative_loss(self) -> bool:
    return self.variant == 'c'

  @property
  def history_filter(self) -> bool:
    return self.variant == 'a'

  def replace(self, **changes: Any) -> 'HParams':
    return dataclasses.replace(self, **changes)

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=True)

  @classmethod
  def from_dict(cls, values: Dict[str, Any]) -> 'HParams':
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f'unknown hyper-parameters {unknown}; known: {sorted(known)}')
    return cls(**values)


def _check_choice(name: str, value: str, choices) -> None:
  if value not in choices:
    raise ValueError(f'{name}={value!r}; choose one of {list(choices)}')
