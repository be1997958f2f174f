"""workbench: a notebook-first research workbench for transformer text classification.

The public API::

    from workbench import Trainer, TextClassificationModel, TextDataModule, TextProcessor, load_config, train

Notebooks and reports also use the modules ``workbench.explore`` (dataset statistics), ``workbench.plots``
(figures), ``workbench.runs`` (run directories), ``workbench.evaluation`` (scoring runs) and
``workbench.reports`` (the batch runner). ARCHITECTURE.md shows how the modules layer.
"""

from workbench.config import Config, load_config
from workbench.data import LabelMap, TextDataModule
from workbench.errors import ConfigError, DataError, ModelLoadError, WorkbenchError
from workbench.models import TextClassificationModel
from workbench.sampler import LengthBucketedBatchSampler
from workbench.text import TextProcessor
from workbench.trainer import FitResult, Trainer, train

__version__ = "0.1.0"
__all__ = [
    "Config", "ConfigError", "DataError", "FitResult", "LabelMap", "LengthBucketedBatchSampler", "ModelLoadError",
    "TextClassificationModel", "TextDataModule", "TextProcessor", "Trainer", "WorkbenchError", "load_config", "train",
]
