"""Prints the Evaluator's POS@N / NEG@N table (model, most-popular, the repeat baseline and the
baseline model, per slice) and the gate decision with the comparisons it was made on.

  python -m evaluation.report <evaluator output dir> [--baseline <other dir>] [--plot out.png]

The output dir is the Evaluator's `evaluation` artifact (what tfma.run_model_analysis wrote). When
the run compared against a baseline model, both columns come from it; --baseline adds a baseline
column from another run's model instead (for a run made without one).
"""

import argparse
import collections
import dataclasses
import math
import os
import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import tensorflow as tf
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.slicer import slicer_lib
from tensorflow_model_analysis.writers import eval_config_writer

from evaluation import metrics as metrics_lib

OVERALL = 'Overall'
_HIT_RATE_NAME = re.compile(r'^(pos|neg)_at_(\d+)$')
_COMPARISONS = (metrics_lib.POS_LIFT_OVER_POPULARITY, metrics_lib.POS_LIFT_OVER_REPEAT,
                metrics_lib.NEG_EXCESS_OVER_POPULARITY, metrics_lib.POS_DROP_BEYOND_NOISE,
                metrics_lib.NEG_RISE_BEYOND_NOISE)


@dataclasses.dataclass
class ModelMetrics:
  """One model's metric values, by slice name ('Overall', 'intent:recommend', ...) then metric."""
  by_slice: Dict[str, Dict[str, float]]


@dataclasses.dataclass
class Threshold:
  """A metric's gate on the overall slice, as the run's EvalConfig set it."""
  lower: Optional[float] = None
  upper: Optional[float] = None
  change: Optional[str] = None  # e.g. '>= -0.01' (candidate - baseline)

  def describe(self) -> str:
    parts = []
    if self.lower is not None:
      parts.append(f'>= {self.lower:g}')
    if self.upper is not None:
      parts.append(f'<= {self.upper:g}')
    if self.change:
      parts.append(f'change {self.change}')
    return ', '.join(parts)


@dataclasses.dataclass
class Run:
  """What an Evaluator run wrote: the candidate's metrics, the baseline's if any, the gate.

  A run without a baseline model (the first one) was gated on floors, ceilings, most-popular and
  the repeat baseline only: with no baseline, the drop and rise beyond noise are 0.
  """
  path: str
  model: ModelMetrics
  baseline: Optional[ModelMetrics]
  validation_ok: bool
  failures: List[str]
  gate: Dict[str, Threshold]  # metric name -> its threshold on the overall slice


def load_run(path: str) -> Run:
  """Reads metrics and validation result from an Evaluator / TFMA output directory."""
  if not tf.io.gfile.isdir(path):
    raise FileNotFoundError(f'no Evaluator output directory at {path}')
  if not tf.io.gfile.glob(os.path.join(path, 'metrics*')):
    raise FileNotFoundError(f'{path} holds no TFMA metrics files (metrics-*); is it the '
                            "Evaluator's evaluation artifact?")
  values = collections.defaultdict(lambda: collections.defaultdict(dict))
  for metrics_for_slice in tfma.load_metrics(path):
    slice_name = slice_display_name(metrics_for_slice.slice_key)
    for entry in metrics_for_slice.metric_keys_and_values:
      if entry.key.is_diff or not entry.value.HasField('double_value'):
        continue
      values[entry.key.model_name][slice_name][entry.key.name] = entry.value.double_value.value
  model_name = tfma.CANDIDATE_KEY if tfma.CANDIDATE_KEY in values else ''
  if model_name not in values:
    raise ValueError(f'{path}: no metrics of a single or candidate model; models found: '
                     f'{sorted(values)}')
  baseline = values.get(tfma.BASELINE_KEY)
  validation = _load_validation(path)
  return Run(path=path,
             model=ModelMetrics(dict(values[model_name])),
             baseline=ModelMetrics(dict(baseline)) if baseline else None,
             validation_ok=validation.validation_ok,
             gate=overall_thresholds(path, model_name),
             failures=[describe_failure(slice_display_name(per_slice.slice_key), failure)
                       for per_slice in validation.metric_validations_per_slice
                       for failure in per_slice.failures])


def _load_validation(path: str):
  if not tf.io.gfile.glob(os.path.join(path, 'validations*')):
    raise FileNotFoundError(f'{path} holds no validation result (validations*): the run had no '
                            'thresholds, so nothing was gated')
  return tfma.load_validation_result(path)


def overall_thresholds(path: str, model_name: str) -> Dict[str, Threshold]:
  """The thresholds the run's EvalConfig (eval_config.json) puts on the model's overall slice."""
  eval_config = eval_config_writer.load_eval_run(path)[0]
  if eval_config is None:
    return {}
  gate = collections.defaultdict(Threshold)
  thresholds = tfma.metrics.metric_thresholds_from_metrics_specs(eval_config.metrics_specs,
                                                                 eval_config=eval_config)
  for key, slices_and_thresholds in thresholds.items():
    if key.model_name != model_name:
      continue
    for slicing_spec, threshold in slices_and_thresholds:
      if slicing_spec is not None and slicing_spec.ByteSize():
        continue  # a threshold of an intent slice, not of the overall slice
      entry = gate[key.name]
      if isinstance(threshold, tfma.GenericChangeThreshold):
        higher = threshold.direction == tfma.MetricDirection.HIGHER_IS_BETTER
        entry.change = f'{">=" if higher else "<="} {threshold.absolute.value:+g}'
      else:
        if threshold.HasField('lower_bound'):
          entry.lower = threshold.lower_bound.value
        if threshold.HasField('upper_bound'):
          entry.upper = threshold.upper_bound.value
  return dict(gate)


def slice_display_name(slice_key) -> str:
  key = slicer_lib.deserialize_slice_key(slice_key)
  if not key:
    return OVERALL
  return ', '.join(f'{column}:{_text(value)}' for column, value in key)


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def describe_failure(slice_name: str, failure) -> str:
  """One line saying which threshold a metric missed, and by how much."""
  key, threshold = failure.metric_key, failure.metric_threshold
  value = failure.metric_value.double_value.value
  if threshold.HasField('value_threshold'):
    bounds = threshold.value_threshold
    parts = []
    if bounds.HasField('lower_bound'):
      parts.append(f'>= {bounds.lower_bound.value:g}')
    if bounds.HasField('upper_bound'):
      parts.append(f'<= {bounds.upper_bound.value:g}')
    return f'{key.name} [{slice_name}] = {value:.4f}, must be {" and ".join(parts)}'
  change = threshold.change_threshold
  direction = tfma.MetricDirection.Name(change.direction)
  limit = []
  if change.HasField('absolute'):
    op = '>=' if change.direction == tfma.MetricDirection.HIGHER_IS_BETTER else '<='
    limit.append(f'{op} {change.absolute.value:+g}')
  if change.HasField('relative'):
    limit.append(f'relative {change.relative.value:+g}')
  return (f'{key.name} [{slice_name}] change vs baseline = {value:+.4f}, must be '
          f'{" and ".join(limit)} ({direction})')


def hit_rate_ns(metrics: ModelMetrics) -> List[int]:
  """The N of every POS@N / NEG@N in the metrics, ascending."""
  return sorted({int(match.group(2)) for by_name in metrics.by_slice.values()
                 for match in map(_HIT_RATE_NAME.match, by_name) if match})


def metric_names(metrics: ModelMetrics) -> List[str]:
  names = ['example_count']
  for n in hit_rate_ns(metrics):
    names += [f'pos_at_{n}', f'neg_at_{n}']
  return names


def table_rows(model: ModelMetrics, baseline: Optional[ModelMetrics], gate: Dict[str, Threshold]
              ) -> List[Tuple[str, str, float, float, float, float, float, str]]:
  """(slice, metric, model, most-popular, repeat, baseline, change, gate) rows; NaN where
  missing (a model exported without the repeat output has no repeat column)."""
  rows = []
  for slice_name in _slice_order(model.by_slice):
    values = model.by_slice[slice_name]
    for name in metric_names(model):
      value = values.get(name, math.nan)
      popular = values.get(metrics_lib.POPULARITY_PREFIX + name, math.nan)
      repeat = values.get(metrics_lib.REPEAT_PREFIX + name, math.nan)
      base = baseline.by_slice.get(slice_name, {}).get(name, math.nan) if baseline else math.nan
      threshold = gate[name].describe() if slice_name == OVERALL and name in gate else ''
      rows.append((slice_name, name, value, popular, repeat, base, value - base, threshold))
  return rows


def comparison_rows(model: ModelMetrics, gate: Dict[str, Threshold]
                   ) -> List[Tuple[str, float, str]]:
  """(comparison, value, gate) of the gated comparisons with most-popular and the baseline."""
  overall = model.by_slice.get(OVERALL, {})
  return [(name, overall.get(name, math.nan), gate[name].describe())
          for name in sorted(gate) if name.startswith(_COMPARISONS)]


def _slice_order(by_slice: Dict[str, Dict[str, float]]) -> List[str]:
  return sorted(by_slice, key=lambda name: (name != OVERALL, name))


def format_report(run: Run, baseline: Optional[ModelMetrics]) -> str:
  lines = [f'Evaluator output: {run.path}',
           f'Gate: {"BLESSED" if run.validation_ok else "NOT BLESSED"}'
           + ('' if run.baseline else
              ' (no baseline model in this run: compared with most-popular and repeat only)')]
  lines += [f'  failed: {failure}' for failure in run.failures]
  for name, value, threshold in comparison_rows(run.model, run.gate):
    lines.append(f'  {name:<34} {_cell(value, name, signed=True)}  must be {threshold}')
  lines.append('')
  header = (f'{"slice":<24} {"metric":<14} {"model":>10} {"popular":>10} {"repeat":>10} '
            f'{"baseline":>10} {"change":>10}  gate (overall slice)')
  lines += [header, '-' * len(header)]
  for slice_name, name, value, popular, repeat, base, change, threshold in table_rows(
      run.model, baseline, run.gate):
    lines.append(f'{slice_name:<24} {name:<14} {_cell(value, name)} {_cell(popular, name)} '
                 f'{_cell(repeat, name)} {_cell(base, name)} '
                 f'{_cell(change, name, signed=True)}  {threshold}'.rstrip())
  return '\n'.join(lines)


def _cell(value: float, name: str, signed: bool = False) -> str:
  if math.isnan(value):
    return f'{"-":>10}'
  if name == 'example_count':
    return f'{value:>+10.0f}' if signed else f'{value:>10.0f}'
  return f'{value:>+10.4f}' if signed else f'{value:>10.4f}'


def write_plot(path: str, run: Run, baseline: Optional[ModelMetrics]) -> str:
  """POS@N and NEG@N against N on the overall slice: model solid, most-popular dotted, the
  repeat baseline dash-dotted, the baseline model dashed."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top

  ns = hit_rate_ns(run.model)
  figure, axes = pyplot.subplots(1, 2, figsize=(9, 3.6))
  for axis, kind, title in ((axes[0], 'pos', 'POS@N (higher is better)'),
                            (axes[1], 'neg', 'NEG@N (lower is better)')):
    for label, metrics, prefix, style in (
        ('model', run.model, '', '-o'),
        ('most popular', run.model, metrics_lib.POPULARITY_PREFIX, ':^'),
        ('repeat (own history)', run.model, metrics_lib.REPEAT_PREFIX, '-.v'),
        ('baseline', baseline, '', '--s')):
      if metrics is None or OVERALL not in metrics.by_slice:
        continue
      values = [metrics.by_slice[OVERALL].get(f'{prefix}{kind}_at_{n}', math.nan) for n in ns]
      if all(math.isnan(value) for value in values):
        continue  # e.g. a model exported before the repeat output
      axis.plot(ns, values, style, label=label)
    for n in ns:
      threshold = run.gate.get(f'{kind}_at_{n}')
      bound = threshold and (threshold.lower if kind == 'pos' else threshold.upper)
      if bound is not None:
        axis.plot([n], [bound], 'k_', markersize=22, markeredgewidth=2,
                  label='floor' if kind == 'pos' else 'ceiling')
    axis.set_title(title)
    axis.set_xlabel('N')
    axis.set_xticks(ns)
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    axis.legend()
  where = os.path.join(*os.path.normpath(run.path).split(os.sep)[-2:])
  figure.suptitle(f'{"BLESSED" if run.validation_ok else "NOT BLESSED"}: {where}')
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  pyplot.close(figure)
  return path


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog='python -m evaluation.report',
      description='Print the POS@N / NEG@N metrics of an Evaluator run (model vs baseline, per '
      'slice) with the gate decision and the thresholds that failed, and plot them against N.')
  parser.add_argument('evaluation_dir',
                      help="the Evaluator's evaluation artifact directory (TFMA output path)")
  parser.add_argument('--baseline', metavar='DIR',
                      help='another evaluation directory whose model is shown as the baseline '
                      '(default: the baseline evaluated in the same run, if any)')
  parser.add_argument('--plot', metavar='PNG', help='write a plot of POS@N and NEG@N against N')
  return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  try:
    run = load_run(args.evaluation_dir)
    baseline = load_run(args.baseline).model if args.baseline else run.baseline
  except (FileNotFoundError, ValueError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  print(format_report(run, baseline))
  if args.plot:
    print(f'\nplot: {write_plot(args.plot, run, baseline)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
