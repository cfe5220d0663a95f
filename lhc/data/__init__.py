"""FER2013 data: readers with strict validation (this package's public API).

``load_fer2013`` reads Kaggle's CSV, per-split CSVs or image folders; ``load_ferplus`` adds
FER+ labels. Training -> train, PublicTest -> val, PrivateTest -> test (the paper's
convention); when a split is absent the result says so and ``carve_test`` can carve a
stratified test split from train. The synthetic default lives in :mod:`lhc.data.synthetic`,
the input pipeline in :mod:`lhc.data.pipeline` (imported on their own, so that reading data
never imports Keras).
"""

from lhc.data.dataset import (
    FER2013_CLASSES,
    DataError,
    FER2013Data,
    Provenance,
    Skipped,
    Split,
    carve_test_split,
)
from lhc.data.ferplus import FERPLUS_CLASSES, load_ferplus
from lhc.data.readers import load_fer2013

__all__ = [
    "FER2013_CLASSES",
    "FERPLUS_CLASSES",
    "DataError",
    "FER2013Data",
    "Provenance",
    "Skipped",
    "Split",
    "carve_test_split",
    "load_fer2013",
    "load_ferplus",
]
