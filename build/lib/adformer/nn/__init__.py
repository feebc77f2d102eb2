"""Shared layers: attention, position embeddings, the feature-reconstruction transformer."""
