"""Device submissions: evaluate a trained checkpoint on local:<fake device> or ibm:<device>, through a ledger.

>>> from qresnet.jobs import SubmitOptions
>>> SubmitOptions(shots=2000, resilience_level=0).limits().shots
2000

The cycle (``qresnet jobs submit|list|status|fetch|cancel``): :func:`prepare` builds the
manifest (per layer the 81 design points of the trained filter, plus validation patches),
plans the jobs within Runtime limits and counts the cost; :func:`submit` records the
submission in the :class:`Ledger` and sends the jobs in a Batch; :func:`fetch` stores results
and writes the device report beside the run.
"""

from qresnet.jobs.errors import DuplicateSubmissionError, JobsError
from qresnet.jobs.fetch import FetchOutcome, cancel, fetch, fetch_all, refresh, watch
from qresnet.jobs.ledger import DEFAULT_LEDGER, JobRecord, Ledger, SubmissionRecord
from qresnet.jobs.manifest import Manifest, ManifestPart, build_manifest
from qresnet.jobs.options import SubmitOptions
from qresnet.jobs.report import DeviceReport, evaluate, write_report
from qresnet.jobs.run import TrainedRun
from qresnet.jobs.submit import Cost, Prepared, estimate_cost, prepare, send_pending, submit
from qresnet.jobs.transport import Retry, RuntimeTransport, classify, open_transport

__all__ = [
    "DEFAULT_LEDGER",
    "Cost",
    "DeviceReport",
    "DuplicateSubmissionError",
    "FetchOutcome",
    "JobRecord",
    "JobsError",
    "Ledger",
    "Manifest",
    "ManifestPart",
    "Prepared",
    "Retry",
    "RuntimeTransport",
    "SubmissionRecord",
    "SubmitOptions",
    "TrainedRun",
    "build_manifest",
    "cancel",
    "classify",
    "estimate_cost",
    "evaluate",
    "fetch",
    "fetch_all",
    "open_transport",
    "prepare",
    "refresh",
    "send_pending",
    "submit",
    "watch",
    "write_report",
]
