"""FER2013 and FER+ in every form users hold them, read into one in-memory dataset and one cache.

    core      FerData, DataError, LoadSummary, split names, subsets, count tables
    fer2013   fer2013.csv, image folders (and your own class folders), the seed's arrays
    ferplus   FER+'s official layout; fer2013.csv + fer2013new.csv
    votes     FER+ crowd votes -> majority labels and soft training targets
    cache     the .npz cache (`ferlab prepare`)
    load      load_dataset(source): picks the reader

Depends on: its modules (this file only re-exports them).
"""

from .cache import CACHE_FORMAT, load_cache, save_cache
from .core import (
    EVAL_SPLITS,
    FERPLUS_SPLITS,
    NOT_A_FACE,
    SPLIT_ORDER,
    TRAIN_SPLIT,
    UNKNOWN,
    VAL_SPLITS,
    DataError,
    FerData,
    LoadSummary,
    format_counts,
    holdout_split,
    select_split,
    stratified_subset,
)
from .fer2013 import IMAGE_EXTENSIONS, MAX_MEMBER_BYTES
from .load import load_dataset, parse_classes
from .votes import LABEL_MODES, majority_labels, vote_targets

__all__ = [
    "CACHE_FORMAT", "EVAL_SPLITS", "FERPLUS_SPLITS", "IMAGE_EXTENSIONS", "LABEL_MODES",
    "MAX_MEMBER_BYTES", "NOT_A_FACE", "SPLIT_ORDER", "TRAIN_SPLIT", "UNKNOWN", "VAL_SPLITS",
    "DataError", "FerData", "LoadSummary", "format_counts", "holdout_split", "load_cache",
    "load_dataset", "majority_labels", "parse_classes", "save_cache", "select_split",
    "stratified_subset", "vote_targets",
]
