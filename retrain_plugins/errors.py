"""Errors the library raises on purpose, each naming what is wrong and where."""


class RetrainError(Exception):
    """Base class of every error raised on purpose by ``retrain_plugins``."""


class SpecError(RetrainError, ValueError):
    """The retraining spec does not match the Feast repo or the data it names."""


class DataError(RetrainError, ValueError):
    """Source data cannot be used (missing column, wrong type, unreadable file)."""


class StoreError(RetrainError):
    """A store is inconsistent: the model store (missing or corrupted artifact, bad manifest), or
    the change-detection state store (a schema this version cannot read)."""


class RoutingError(RetrainError, LookupError):
    """A prediction row cannot be routed to any model."""
