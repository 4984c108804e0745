"""PlayLogExampleGen: a TFX ExampleGen for play logs, with row validation and quarantine."""

from components.play_log_example_gen.artifacts import Quarantine
from components.play_log_example_gen.component import PlayLogExampleGen
