"""Data: folder layouts, image reading, the embedded ELPV set and a synthetic-defect generator."""

from adformer.data.folders import list_categories, load_category, load_root, validation_split
from adformer.data.types import Batch, CategoryData, Sample

__all__ = [
    "Batch",
    "CategoryData",
    "Sample",
    "list_categories",
    "load_category",
    "load_root",
    "validation_split",
]
