"""The errors of the jobs layer; each message says what to do next."""

from qresnet.errors import QresnetError


class JobsError(QresnetError):
    """A submission could not be prepared, sent, fetched or found in the ledger."""


class DuplicateSubmissionError(JobsError):
    """The same manifest was submitted before; ``--force`` sends it again."""
