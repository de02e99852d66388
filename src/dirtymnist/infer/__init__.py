"""Inference: predictions, ensembles, thresholds, submissions and their scores."""
