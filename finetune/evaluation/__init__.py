"""Judging a model: test metrics, calibration, label-set thresholds, error analysis and slices, baselines, the
paired bootstrap, label issues and the written report."""
