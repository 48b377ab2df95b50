import pytest
import torch

from qresnet.errors import ResidualSpecError
from qresnet.nn import combine, pad_map
from qresnet.residual import ResidualSpec


@pytest.mark.parametrize("text, edges", [
    ("none", set()), ("X+O1", {(0, 1)}), ("O1+O2", {(1, 2)}), ("X+O2", {(0, 2)}),
    ("(X+O1)+O2", {(0, 1), (1, 2)}), ("(O1+O2)+O3", {(1, 2), (2, 3)}),
    ("((X+O1)+O2)+O3", {(0, 1), (1, 2), (2, 3)}), ("X+O1, X+O2", {(0, 1), (0, 2)}),
    ("(0,1),(1,2)", {(0, 1), (1, 2)}), ("[(0, 2)]", {(0, 2)}), ("0-1, 1->2", {(0, 1), (1, 2)}),
])
def test_parse_paper_notation_and_edge_lists(text, edges):
    assert set(ResidualSpec.coerce(text).edges) == edges


def test_canonical_notation_round_trips_every_configuration():
    for layers, count in ((1, 2), (2, 8), (3, 64)):
        specs = ResidualSpec.enumerate(layers)
        assert len(specs) == count == 2 ** (layers * (layers + 1) // 2)
        assert len({s.edges for s in specs}) == count
        for spec in specs:
            assert ResidualSpec.coerce(spec.notation, layers) == spec
    assert [s.notation for s in ResidualSpec.paper(2)] == ["none", "X+O1", "O1+O2", "X+O2", "(X+O1)+O2"]


def test_reach_rule():
    assert ResidualSpec.coerce("none", 2).reaches == (False, True)
    assert ResidualSpec.coerce("X+O1", 2).reaches == (False, True)
    assert ResidualSpec.coerce("X+O2", 2).reaches == (False, True)
    assert ResidualSpec.coerce("O1+O2").reaches == (True, True)
    assert ResidualSpec.coerce("(X+O1)+O2").reaches == (True, True)
    assert ResidualSpec.coerce("O1+O3", 3).reaches == (True, False, True)
    assert ResidualSpec.coerce("(O1+O2)+O3").reaches == (True, True, True)


@pytest.mark.parametrize("text, position, fragment", [
    ("X+", 2, "text ends"), ("X+O1)", 4, "unexpected ')'"), ("(X+O1", 5, "expected ')'"),
    ("X+Y", 2, "found 'Y'"), ("O1", 0, "at least two terms"), ("X+X+O1", 2, "appears twice"),
    ("(X+O2)+O1", 0, "bare term"),
])
def test_malformed_strings_point_at_the_failure(text, position, fragment):
    with pytest.raises(ResidualSpecError) as info:
        ResidualSpec.coerce(text)
    message = str(info.value)
    assert fragment in message and f"at position {position}" in message
    assert message.splitlines()[-1] == "  " + " " * position + "^"


def test_layer_count_is_checked():
    with pytest.raises(ResidualSpecError, match="names layer 3, but the model has 2 layers"):
        ResidualSpec.coerce("O2+O3", 2)
    with pytest.raises(ResidualSpecError, match="0 <= j < k <= 2"):
        ResidualSpec(2, frozenset({(2, 1)}))


def test_padding():
    x = torch.ones(1, 2, 2)
    bottom = pad_map(x, 4, 4)
    assert bottom[0, :2, :2].sum() == 4 and bottom.sum() == 4
    centred = pad_map(x, 4, 4, "center")
    assert centred[0, 1:3, 1:3].sum() == 4 and centred.sum() == 4
    spec = ResidualSpec.coerce("X+O1")
    h1 = combine(spec, 1, torch.full((1, 1, 1), 2.0), [torch.ones(1, 2, 2)])
    assert h1.tolist() == [[[3.0, 1.0], [1.0, 1.0]]]


@pytest.mark.parametrize("edges, message", [
    ([(True, 1)], r"skip edge \(True, 1\) node=True must be a non-negative integer"),
    ([(0, 1.0)], r"skip edge \(0, 1\.0\) node=1\.0 must be a non-negative integer"),
    ([(0, 1, 2)], r"skip edge \(0, 1, 2\) must be a pair"),
    ([5], "skip edge 5 must be a pair"),
    (7, "residual spec 7 must be a string or pairs"),
])
def test_edge_pairs_are_checked_integers(edges, message):
    with pytest.raises(ResidualSpecError, match=message):
        ResidualSpec.coerce(edges)
    if isinstance(edges, list):
        with pytest.raises(ResidualSpecError, match=message):
            ResidualSpec(2, frozenset(edges) if isinstance(edges[0], tuple) else edges)


def test_edge_pairs_of_numpy_integers_become_plain_ints():
    import numpy as np

    spec = ResidualSpec.coerce([(np.int64(0), np.int64(2))])
    assert spec == ResidualSpec.coerce("X+O2") and all(type(n) is int for edge in spec.edges for n in edge)
