"""Deployment: bundles (safetensors + JSON)."""
