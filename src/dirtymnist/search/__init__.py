"""Hyper-parameter search: Optuna studies shared between workers."""
