"""The names a user chooses from, each defined once: the checks, the value objects and the command line's
``choices=`` all import them from here.

This module imports nothing, so ``qresnet --help`` and the torch-free modules (``qresnet.config``) can use it.
What a name *means* lives with its user: a preset's settings in ``qresnet.study.sweep``, a readout's circuit in
``qresnet.circuits``.
"""

# the model
HEADS = ("linear", "quantum")
DEFAULT_HEAD_SCALE = 5.0  # quantum head: logits = scale * <Z>; scores in [-1, 1] are too flat for a softmax
DEFAULT_HEAD_REPS = 2  # quantum head: ansatz repetitions (the paper's)
HEAD_ENCODING_NOISE = ("exact", "transpiled")  # quantum head on a noisy model: also run the transpiled encoding
MODES = ("response", "per-patch")  # quanvolution: contract the response tensor, or run every patch
RUN_MODES = (*MODES, "auto")  # a run may leave the choice to the row count (qresnet.run.cost.choose_mode)
CONFIG_SETS = ("paper", "all")  # residual configurations by name: the paper's, or every edge set

# circuit templates
TEMPLATES = ("quanv", "head")
READOUTS = ("mean", "per-qubit")
ENTANGLEMENTS = ("chain", "ring", "full")
ANSATZES = ("ry_rz", "random", "strongly_entangling")  # a filter's trainable circuit
FILTER_ENCODINGS = ("ry_pi", "ry", "rx_pi")  # how a filter reads a pixel x: RY(pi x), RY(x), RX(pi x)
WINDOW_PADDINGS = ("cover", "valid")  # a filter's windows: cover every pixel (zero-padded), or only whole windows

# where and how circuits run
ENGINES = ("engine", "aer")
EXECUTION_MODES = ("batch", "session")
OPTIMIZATION_LEVELS = (0, 1, 2, 3)
RESILIENCE_LEVELS = (0, 1, 2)

# data
DATASETS = ("digits", "mnist")  # named; any other: npz:PATH or idx:DIR (IMAGE_SOURCES)
IMAGE_SOURCES = ("npz", "idx")
FILTER_KINDS = ("quantum", "classical")  # a layer's filter: the circuit, or the classical control of its size

# studies
PRESET_NAMES = ("quick", "paper", "paper-quantum", "quick-quantum", "single")  # their settings: qresnet.study.sweep.PRESETS
EXECUTORS = ("processes", "ray")
BUDGETS = ("full", "tiny")
# qresnet reproduce --study: the paper's claims (qresnet.study.reproduce), the noise-level study
# (qresnet.study.robustness), or the filter design study (qresnet.study.design_study)
REPRODUCTION_STUDIES = ("claims", "robustness", "design")

# output
FORMATS = ("table", "json")
