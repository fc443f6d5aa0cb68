"""Datasets: finding, downloading, checking and reading them, and batching for training.

    from cnnbuild.data import load_dataset
    train = load_dataset("mnist", "train")   # Dataset: uint8 (N, 1, 28, 28), int64 labels

Every problem with a file or folder is a DataError that names it and says how to fix it.
"""

from cnnbuild.data.catalog import dataset_names
from cnnbuild.data.dataset import DataError, Dataset, DataWarning
from cnnbuild.data.folder import load_image_file
from cnnbuild.data.registry import load_dataset

__all__ = [
    "DataError",
    "DataWarning",
    "Dataset",
    "dataset_names",
    "load_dataset",
    "load_image_file",
]
