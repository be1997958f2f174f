"""workbench: a notebook-first research workbench for transformer text classification.

The public API::

    from workbench import Trainer, TextClassificationModel, TextDataModule, TextProcessor, load_config, train

Notebooks and reports also use the modules ``workbench.explore`` (dataset statistics), ``workbench.plots``
(figures), ``workbench.runs`` (run directories), ``workbench.evaluation`` (scoring runs) and
``workbench.reports`` (the batch runner). ARCHITECTURE.md shows how the modules layer.
"""

import importlib

# The public API, resolved on first use (PEP 562): ``import workbench.runtime`` serves an ONNX export without
# loading torch, and ``workbench --help`` starts fast, while ``from workbench import Trainer`` works as usual.
_PUBLIC = {
    "Config": "config",
    "load_config": "config",
    "LabelMap": "labels",
    "TextDataModule": "data",
    "ConfigError": "errors",
    "DataError": "errors",
    "ModelLoadError": "errors",
    "WorkbenchError": "errors",
    "TextClassificationModel": "models",
    "LengthBucketedBatchSampler": "sampler",
    "TextProcessor": "text",
    "FitResult": "trainer",
    "Trainer": "trainer",
    "train": "trainer",
}


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"workbench.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


__version__ = "0.1.0"
__all__ = sorted(_PUBLIC)
