"""Submit a run, then die by SIGKILL: ``python jobs_crash.py RUN_DIR LEDGER STORE BACKEND WHEN``.

``BACKEND`` is ``ibm`` (the file-backed fake service of jobs_fake.py) or ``local`` (local testing
mode). ``WHEN`` is ``mid-send`` (right after the service accepted job 1, before the ledger holds
its id) or ``after-submit`` (right after ``submit`` returned), on fake_manila; or
``head-mid-send`` for a quantum-head run on fake_melbourne: ``submit`` and then ``fetch``, which
sends stage 2, dying right after the service accepted the first stage-2 job, before the ledger
holds its id.
"""

import os
import signal
import sys
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)

from jobs_fake import HEAD_DEVICE, HEAD_OPTIONS, fake_transport  # noqa: E402  (the script's own directory is on sys.path)

from qresnet.backends import BackendOptions  # noqa: E402
from qresnet.jobs import Ledger, SubmitOptions, fetch, prepare, submit  # noqa: E402

CRASH_OPTIONS = SubmitOptions(BackendOptions(shots=3000, seed=11, resilience_level=0), validate_patches=4, max_two_qubit_gates=400)
# local testing mode simulates fake_melbourne's full noise model, about 1 s per shot of a head circuit: 2 shots
HEAD_LOCAL_OPTIONS = HEAD_OPTIONS.with_backend(shots=2)


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    run_dir, ledger_path, store, backend, when = sys.argv[1:]
    ledger = Ledger(ledger_path)
    if when == "head-mid-send":
        if backend == "ibm":
            transport = fake_transport(store, HEAD_OPTIONS, device=HEAD_DEVICE)
            prepared = prepare(run_dir, f"ibm:{HEAD_DEVICE}", HEAD_OPTIONS, transport=transport)
        else:
            transport = None
            prepared = prepare(run_dir, "local:fake_melbourne", HEAD_LOCAL_OPTIONS)
        submission_id = submit(prepared, ledger)
        stage_one = len(ledger.jobs(submission_id))
        fetch(ledger, submission_id, transport=transport, on_sent=lambda index, job: index >= stage_one and die())
        return  # not reached: fetch sends stage 2

    if backend == "ibm":
        prepared = prepare(run_dir, "ibm:ibm_fake_manila", CRASH_OPTIONS, transport=fake_transport(store, CRASH_OPTIONS))
    else:
        prepared = prepare(run_dir, "local:fake_manila", CRASH_OPTIONS)

    def die_after_job_1(index, job):
        if index == 1:
            die()

    submit(prepared, ledger, on_sent=die_after_job_1 if when == "mid-send" else None)
    die()


if __name__ == "__main__":
    main()
