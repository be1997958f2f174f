"""Error types that workbench raises for bad input.

Every error carries a message that names the file, row, column or key at fault and says how to fix it,
so a researcher never has to read a traceback from deep inside pandas or torch.
"""


class WorkbenchError(Exception):
    """Base class for every error workbench raises on purpose."""


class ConfigError(WorkbenchError, ValueError):
    """A configuration key or value is wrong (unknown key, bad type, out of range)."""


class DataError(WorkbenchError, ValueError):
    """A data file or a row in it cannot be used (missing column, empty text, unknown label, ...)."""


class ModelLoadError(WorkbenchError, OSError):
    """A backbone, checkpoint or tokenizer cannot be loaded."""


class ParityError(WorkbenchError):
    """An export was refused: its outputs break parity with PyTorch (``reason``; the measured ``parity`` report)."""

    def __init__(self, message: str, *, engine: str, reason: str, parity: dict):
        super().__init__(message)
        self.engine, self.reason, self.parity = engine, reason, parity
