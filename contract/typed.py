"""Typed settings: dataclasses whose fields are checked against their annotations when built.

A settings dataclass derives from `Settings`: its fields are checked against their annotations
when it is built, then its `check` applies its range rules with `require`. `build(cls, values)`
(or `cls.from_dict`) makes one from a dict (a parsed JSON file), refusing unknown keys with the
closest known name. Every error is a SettingError naming the key's whole
path (`train.hparams.batch_size`), the value and what is allowed.

Standard library only: the runners, kfp_submit and Beam workers load settings without TFX.
"""

import dataclasses
import difflib
import math
import typing
from typing import Any, Mapping


_INT64_LIMIT = 2**63


class SettingError(ValueError):
  """A setting that is unknown, of the wrong type or out of range; `path` names its key."""

  def __init__(self, path: str, problem: str):
    super().__init__(f'{path}: {problem}')
    self.path = path
    self.problem = problem

  def under(self, parent: str) -> 'SettingError':
    return SettingError(f'{parent}.{self.path}' if self.path else parent, self.problem)


class Settings:
  """Base of the settings dataclasses: each field is checked against its annotation when built,
  then the class's own `check` runs its range rules."""

  def __post_init__(self):
    check_fields(self)
    self.check()

  def check(self) -> None:
    """Raises SettingError on a value out of range (fields are already of the right type)."""

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]):
    return build(cls, values)


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
  """Raises SettingError(key) unless ok; `allowed` says what the value may be."""
  if not ok:
    raise SettingError(key, f'{value!r} is not allowed; {allowed}')


def build(cls, values: Any):
  """An instance of the settings dataclass cls from a dict of its fields (defaults for the rest)."""
  names = sorted(f.name for f in dataclasses.fields(cls) if f.init)
  if not isinstance(values, Mapping):
    raise SettingError('', f'expected an object with keys from {names}, got {values!r}')
  for key in values:
    if key not in names:
      close = difflib.get_close_matches(str(key), names, n=1)
      hint = f'did you mean {close[0]!r}? ' if close else ''
      raise SettingError(str(key), f'unknown setting; {hint}known: {names}')
  return cls(**values)


def check_fields(instance) -> None:
  """Checks every field of a (frozen) settings dataclass against its annotation; converts what
  JSON cannot spell (a list to a tuple, an int to a float, a dict to a nested settings class)."""
  hints = typing.get_type_hints(type(instance))
  for field in dataclasses.fields(instance):
    value = getattr(instance, field.name)
    checked = _checked(hints[field.name], value, field.name)
    if checked is not value:
      object.__setattr__(instance, field.name, checked)


def _checked(hint, value: Any, key: str) -> Any:
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin is typing.Union:
    if value is None and type(None) in args:
      return None
    kinds = [a for a in args if a is not type(None)]
    for kind in kinds[:-1]:
      try:
        return _checked(kind, value, key)
      except SettingError:
        pass
    return _checked(kinds[-1], value, key)  # its error if no kind fits
  if dataclasses.is_dataclass(hint):
    if isinstance(value, hint):
      return value
    try:
      return build(hint, value)
    except SettingError as error:
      raise error.under(key) from None
  if origin is tuple:
    _expect(isinstance(value, (list, tuple)), key, value, 'a list')
    return tuple(_checked(args[0], item, f'{key}[{i}]') for i, item in enumerate(value))
  if origin is dict:
    _expect(isinstance(value, Mapping), key, value, 'an object')
    return {_checked(args[0], k, f'{key} key'): _checked(args[1], v, f'{key}.{k}')
            for k, v in value.items()}
  if hint is bool:
    _expect(isinstance(value, bool), key, value, 'true or false')
  elif hint is int:
    _expect(isinstance(value, int) and not isinstance(value, bool), key, value, 'an integer')
    _expect(-_INT64_LIMIT <= value < _INT64_LIMIT, key, value,
            'a 64-bit integer (TensorFlow and the metadata store hold no larger one)')
  elif hint is float:
    _expect(isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value), key, value, 'a finite number')
    return float(value)
  elif hint is str:
    _expect(isinstance(value, str), key, value, 'a string')
  return value


def _expect(ok: bool, key: str, value: Any, kind: str) -> None:
  if not ok:
    raise SettingError(key, f'{value!r} is not {kind}')
