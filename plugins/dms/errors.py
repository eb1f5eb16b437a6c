"""The error tree: one root, and branches the caller can act on without parsing messages."""

from __future__ import annotations


class DmsError(Exception):
    """Root of every error DMS raises on purpose."""


try:
    # Airflow does not retry a task that raises this: a retry of a fatal error would only
    # repeat it (after the retry delays) and bury the message under identical attempts.
    from airflow.sdk.exceptions import AirflowFailException as _NoRetry
except ImportError:  # outside Airflow: the emulator's tools, plain scripts

    class _NoRetry(Exception):  # type: ignore[no-redef]
        pass


class FatalError(DmsError, _NoRetry):
    """Retrying will not help: bad configuration, bad input, a refused operation."""


class RetriableError(DmsError):
    """A passing fault (network, 5xx, lock contention): the task may be retried as is."""


class SpecError(FatalError):
    """A migration spec is invalid; the message names the file and the YAML path."""


class SourceError(FatalError):
    """A source file cannot be read as declared; the message names the file and row."""


class ReconcileError(FatalError):
    """Source rows do not equal loaded + rejected + failed, or too many rows failed."""
