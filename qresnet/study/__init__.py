"""Studies built from many runs: sweeps and presets (``sweep``), sweeps as Ray tasks (``ray_sweep``), intervals and the
audit's verdict rules (``evidence``), the comparison report (``report``), the gradient audit (``audit``) and the
reproduction of the paper's claims (``reproduce``). Import the modules themselves; this package imports nothing."""
