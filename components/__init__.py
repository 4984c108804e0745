"""Custom TFX components of playrecall."""


def __getattr__(name):
  # Kubeflow V2 imports custom artifact classes by type name ('components.PlayLogQuarantine');
  # resolved lazily so importing one component does not import every other.
  if name == 'PlayLogQuarantine':
    from components.play_log_example_gen.artifacts import Quarantine  # pylint: disable=g-import-not-at-top
    return Quarantine
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
