"""PlayLogExampleGen: a TFX ExampleGen for play logs, with row validation and quarantine.

The component is in component.py. This package imports nothing itself, so the Beam stages
(beam_stages.py) load on workers without TFX.
"""
