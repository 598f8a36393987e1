"""Evaluation: comparing circuits across tasks and thresholds, robustness across seeds, orders and corruptions, and the planted-circuit ground truth. Imports the layers below (core to discovery)."""
