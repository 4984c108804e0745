"""Synthetic play logs with known ground truth (see docs/data_generator.md).

API: datagen.generate.generate(out_dir, num_events, ...) writes a log and returns a summary;
datagen.ground_truth.load(out_dir) reads the ground truth back.
"""
