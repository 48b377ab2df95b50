"""Device submissions: evaluate a trained checkpoint on local:<fake device> or ibm:<device>, through a ledger.

>>> from qresnet.backends import BackendOptions
>>> from qresnet.jobs import SubmitOptions
>>> SubmitOptions(BackendOptions(shots=2000, resilience_level=0)).limits().shots
2000

The cycle (``qresnet jobs submit|list|status|fetch|cancel``): :func:`prepare` builds the
manifest (per layer the 81 design points of the trained filter, plus validation patches, plus
for a quantum head one circuit per test image), plans the jobs within Runtime limits and counts
the cost of all of them; :func:`submit` records the submission in the :class:`Ledger` and sends
the jobs in a Batch; :func:`fetch` stores results, sends a quantum head's circuits (stage 2:
their inputs are the device's layer outputs) once the layer results are in, and writes the
device report beside the run. Names load on first use, so that ``qresnet
--help`` does not import Qiskit and torch.
"""

from qresnet.values import lazy_exports

_HOMES = {
    "qresnet.errors": ("DuplicateSubmissionError", "JobsError"),
    "qresnet.jobs.ledger": ("DEFAULT_LEDGER", "JobRecord", "Ledger", "SubmissionRecord"),
    "qresnet.jobs.manifest": ("Manifest", "ManifestPart", "build_manifest"),
    "qresnet.jobs.options": ("SubmitOptions",),
    "qresnet.jobs.device_report": ("DeviceReport", "evaluate", "write_device_report"),
    "qresnet.jobs.retrieval": ("FetchOutcome", "cancel", "fetch", "fetch_all", "refresh", "watch"),
    "qresnet.jobs.run": ("TrainedRun",),
    "qresnet.jobs.stages": ("record_head_stage",),
    "qresnet.jobs.submission": ("Cost", "Prepared", "check_new", "estimate_cost", "prepare", "send_pending", "submit"),
    "qresnet.jobs.transport": ("Retry", "RuntimeTransport", "classify", "open_transport"),
}
__getattr__, __all__ = lazy_exports("qresnet.jobs", _HOMES)
