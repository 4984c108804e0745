"""ExampleValidator that stops the run on an anomaly."""
