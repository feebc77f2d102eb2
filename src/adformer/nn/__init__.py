"""Shared layers: attention variants, position embeddings, the feature-reconstruction transformer."""
