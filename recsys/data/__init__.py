"""Reading and validating datasets in the data contract's form (see DATA_CONTRACT.md)."""

from recsys.data.dataset import Capability, Dataset, DatasetSummary
from recsys.data.errors import ContractError, Violation
from recsys.data.loader import load_dataset, load_pairs, load_table

__all__ = [
    "Capability",
    "ContractError",
    "Dataset",
    "DatasetSummary",
    "Violation",
    "load_dataset",
    "load_pairs",
    "load_table",
]
