"""Evaluation: metrics, the test protocol and visualisation."""
