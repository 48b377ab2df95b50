"""Submit a run, then die by SIGKILL: ``python jobs_crash.py RUN_DIR LEDGER STORE BACKEND WHEN``.

``BACKEND`` is ``ibm`` (the file-backed fake service of jobs_fake.py) or ``local`` (local testing
mode on fake_manila). ``WHEN`` is ``mid-send`` (right after the service accepted job 1, before
the ledger holds its id) or ``after-submit`` (right after ``submit`` returned).
"""

import os
import signal
import sys
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)

from jobs_fake import fake_transport  # noqa: E402  (the script's own directory is on sys.path)

from qresnet.jobs import Ledger, SubmitOptions, prepare, submit  # noqa: E402

CRASH_OPTIONS = SubmitOptions(shots=3000, seed=11, resilience_level=0, validate_patches=4, max_two_qubit_gates=400)


def main() -> None:
    run_dir, ledger_path, store, backend, when = sys.argv[1:]
    if backend == "ibm":
        prepared = prepare(run_dir, "ibm:ibm_fake_manila", CRASH_OPTIONS, transport=fake_transport(store, CRASH_OPTIONS))
    else:
        prepared = prepare(run_dir, "local:fake_manila", CRASH_OPTIONS)

    def die_after_job_1(index, job):
        if index == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    submit(prepared, Ledger(ledger_path), on_sent=die_after_job_1 if when == "mid-send" else None)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main()
