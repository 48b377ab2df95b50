"""The tutorial notebook runs from top to bottom (outputs are cleared in git; nbclient executes it here)."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the tutorial test needs the [test] extra (nbclient, nbformat)")
nbclient = pytest.importorskip("nbclient", reason="the tutorial test needs the [test] extra (nbclient, ipykernel)")

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"


def test_the_tutorial_runs_and_reads_the_checklist(tmp_path, monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # cleared in git
    monkeypatch.chdir(tmp_path)
    from jupyter_client import KernelManager

    kernel = KernelManager(kernel_name="python3", transport="ipc", ip=str(tmp_path / "kernel"))  # no TCP at all
    nbclient.NotebookClient(notebook, km=kernel, timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs)
    assert "Q1 earlier layers get gradients" in text and "Q3 beats frozen" in text
    assert "agrees" in text and "DIFFERS" not in text
    assert "cost: 1 job" in text and "Device evaluation" in text and "O1_O2-trainable-seed0" in text
