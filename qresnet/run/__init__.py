"""One training run: the model built from a config and a backend (``build``), the training loop (``train``), its
evaluation (``evaluate``), its run directory with atomic writes and identity (``rundir``), that directory checked
against itself and the point a resume continues from (``integrity``), the lock on an output directory (``lock``), the
data and divergence checks of each step (``divergence``) and its curves (``figures``). Import the modules
themselves; this package imports nothing, so that torch-free callers stay so."""
