import warnings

import numpy as np
import pytest

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"qiskit_ibm_runtime\..*")


@pytest.fixture
def rng():
    return np.random.default_rng(20240214)
