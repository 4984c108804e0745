"""The report command on real TFMA outputs."""

import pytest
from matplotlib import image

from evaluation import report
from tests.pipeline import mlmd_store


def _overall_row(out: str, metric: str) -> str:
  return next(line for line in out.splitlines()
              if line.startswith('Overall') and f' {metric} ' in line)


def test_report_shows_model_popularity_baseline_change_and_failed_thresholds(medium_vs_good,
                                                                           tmp_path, capsys):
  plot = str(tmp_path / 'hit_rates.png')
  assert report.main([medium_vs_good, '--plot', plot]) == 0
  out = capsys.readouterr().out
  run = report.load_run(medium_vs_good)
  assert 'Gate: NOT BLESSED' in out
  for failure in run.failures:
    assert f'failed: {failure}' in out
  overall = run.model.by_slice[report.OVERALL]['pos_at_50']
  popular = run.model.by_slice[report.OVERALL]['popularity_pos_at_50']
  repeat = run.model.by_slice[report.OVERALL]['repeat_pos_at_50']
  base = run.baseline.by_slice[report.OVERALL]['pos_at_50']
  header = next(line for line in out.splitlines() if line.startswith('slice'))
  assert header.split()[2:7] == ['model', 'popular', 'repeat', 'baseline', 'change']
  row = _overall_row(out, 'pos_at_50')
  assert row.split()[2:7] == [f'{overall:.4f}', f'{popular:.4f}', f'{repeat:.4f}', f'{base:.4f}',
                              f'{overall - base:+.4f}']
  assert row.endswith('>= 0.2')
  assert _overall_row(out, 'neg_at_50').endswith('<= 0.3')
  assert run.gate['pos_at_50'].lower == pytest.approx(0.2)
  # The comparisons the gate was made on, each with its bound.
  drop = run.model.by_slice[report.OVERALL]['pos_drop_beyond_noise_at_50']
  comparisons = {line.split()[0]: line.split()[1:] for line in out.splitlines()
                 if line.startswith('  ') and 'must be' in line and 'failed:' not in line}
  assert comparisons['pos_drop_beyond_noise_at_50'] == [f'{drop:+.4f}', 'must', 'be', '<=', '0']
  assert set(comparisons) == {'pos_drop_beyond_noise_at_50', 'neg_rise_beyond_noise_at_50',
                              'pos_lift_over_popularity_at_50', 'pos_lift_over_repeat_at_50',
                              'neg_excess_over_popularity_at_50'}
  assert 'pos_at_10' not in run.gate  # only the gated N carries thresholds
  for intent_slice in ('intent:on_demand', 'intent:genre_request', 'intent:recommend'):
    assert intent_slice in out
  pixels = image.imread(plot)
  assert pixels.shape[0] > 200 and pixels.shape[1] > 400


def test_baseline_from_another_run(good_alone, bad_alone, capsys):
  assert report.main([good_alone, '--baseline', bad_alone]) == 0
  out = capsys.readouterr().out
  assert ('Gate: BLESSED (no baseline model in this run: compared with most-popular and repeat'
          in out)
  good = report.load_run(good_alone).model.by_slice[report.OVERALL]['neg_at_100']
  bad = report.load_run(bad_alone).model.by_slice[report.OVERALL]['neg_at_100']
  overall = report.load_run(good_alone).model.by_slice[report.OVERALL]
  popular, repeat = overall['popularity_neg_at_100'], overall['repeat_neg_at_100']
  row = _overall_row(out, 'neg_at_100')
  assert row.split()[2:] == [f'{good:.4f}', f'{popular:.4f}', f'{repeat:.4f}', f'{bad:.4f}',
                             f'{good - bad:+.4f}']  # not gated


def test_missing_output_is_a_clear_error(tmp_path, capsys):
  assert report.main([str(tmp_path / 'nowhere')]) == 2
  assert 'no Evaluator output directory at' in capsys.readouterr().err
  assert report.main([str(tmp_path)]) == 2
  assert 'holds no TFMA metrics files' in capsys.readouterr().err


def test_help_names_the_options(capsys):
  with pytest.raises(SystemExit) as exit_info:
    report.main(['--help'])
  assert exit_info.value.code == 0
  out = capsys.readouterr().out
  assert '--baseline' in out and '--plot' in out


def test_pipeline_summary_prints_the_report_and_plot_of_a_runs_evaluation(medium_vs_good,
                                                                          tmp_path):
  """pipeline.summary, on a metadata store whose latest run holds this Evaluator output."""
  store = mlmd_store.Store(str(tmp_path / 'metadata.db'))
  [evaluation_id] = store.add_run(mlmd_store.PIPELINE, 'run',
                                  [('ModelEvaluation', medium_vs_good, {})])
  out = store.summary(tmp_path / 'reports')
  run = report.load_run(medium_vs_good)
  assert report.format_report(run, run.baseline) in out
  assert 'Gate: NOT BLESSED' in out
  plot = tmp_path / 'reports' / f'hit_rates-{evaluation_id}.png'
  assert f'plot: {plot}' in out
  pixels = image.imread(str(plot))
  assert pixels.shape[0] > 200 and pixels.shape[1] > 400
