"""Residual configurations as skip-edge sets (docs/design.md section 2): the parser and the value, without torch.

Nodes h_0 = X, h_1 .. h_L; layer k reads h_{k-1} and produces O_k, and

    h_k = O_k + sum over (j, k) in E of h_j        (zero-padded to the larger map)

Notation: a sum names the node of its highest layer output O_k (written bare); every other
term is a source: ``X`` is h_0, ``O_j`` is h_j, and a parenthesised sum is the node it
defines. So ``(X+O1)+O2`` = {(0,1), (1,2)} and ``X+O2`` = {(0,2)}. Several sums join with
commas (``X+O1, X+O2``); ``none`` is the empty set; an edge list such as ``(0,1),(1,2)``
or ``0-1, 1-2`` is accepted as it stands.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from qresnet.choices import WINDOW_PADDINGS
from qresnet.errors import ConfigError, ResidualSpecError
from qresnet.values import checked_int

PAPER_CONFIGS = {
    2: ("none", "X+O1", "O1+O2", "X+O2", "(X+O1)+O2"),
    3: ("none", "(O1+O2)+O3", "((X+O1)+O2)+O3"),
}
_EDGE_LIST = re.compile(r"^[\s\[\]{}()\d,\->]+$")


def _fail(text: str, pos: int, why: str) -> ResidualSpecError:
    return ResidualSpecError(f"malformed residual spec {text!r}: {why} at position {pos}\n  {text}\n  {' ' * pos}^")


class _Parser:
    """Recursive descent over: clauses := sum (',' sum)*; sum := term ('+' term)*; term := X | O<k> | '(' sum ')'."""

    def __init__(self, text: str):
        self.text, self.pos = text, 0
        self.edges: set[tuple[int, int]] = set()

    def peek(self) -> str:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def clauses(self) -> None:
        self.sum()
        while self.peek() == ",":
            self.pos += 1
            self.sum()
        if self.peek():
            raise _fail(self.text, self.pos, f"unexpected {self.peek()!r}")

    def sum(self) -> int:
        start = self.peek() and self.pos
        terms = [self.term()]
        while self.peek() == "+":
            self.pos += 1
            terms.append(self.term())
        if len(terms) == 1:
            node, bare, where = terms[0]
            if not bare:
                return node
            raise _fail(self.text, where, "a residual sum needs at least two terms, such as X+O1")
        seen: set[int] = set()
        for node, _, where in terms:
            if node in seen:
                raise _fail(self.text, where, f"node {'X' if node == 0 else f'O{node}'} appears twice in one sum")
            seen.add(node)
        target = max(seen)
        if target == 0 or not next(bare for node, bare, _ in terms if node == target):
            raise _fail(self.text, start, "each sum needs its highest layer output as a bare term (as in X+O1 or (X+O1)+O2)")
        self.edges.update((node, target) for node in seen - {target})
        return target

    def term(self) -> tuple[int, bool, int]:
        """(node, is a bare O_k, position)."""
        char, where = self.peek(), self.pos
        if char == "(":
            self.pos += 1
            node = self.sum()
            if self.peek() != ")":
                raise _fail(self.text, self.pos, "expected ')'")
            self.pos += 1
            return node, False, where
        if char in ("X", "x"):
            self.pos += 1
            return 0, False, where
        if char in ("O", "o"):
            match = re.compile(r"[Oo](\d+)").match(self.text, self.pos)
            if not match or int(match.group(1)) < 1:
                raise _fail(self.text, where, "expected a layer output O1, O2, ...")
            self.pos = match.end()
            return int(match.group(1)), True, where
        raise _fail(self.text, where, f"expected X, O<k> or '(' but found {char!r}" if char else "expected X, O<k> or '(' but the text ends")


def _edge(pair: Sequence[int]) -> tuple[int, int]:
    """A skip edge (j, k) as two plain ints; anything else is an error naming the edge."""
    nodes = tuple(pair) if isinstance(pair, Iterable) and not isinstance(pair, str) else ()
    if len(nodes) != 2:
        raise ResidualSpecError(f"skip edge {pair!r} must be a pair (j, k) of node numbers")
    j, k = (checked_int(node, f"skip edge {nodes!r} node", 0, error=ResidualSpecError) for node in nodes)
    return j, k


@dataclass(frozen=True)
class ResidualSpec:
    """A residual configuration of ``num_layers`` quanvolution layers: the skip-edge set ``edges``.

    >>> spec = ResidualSpec.coerce("(X+O1)+O2")
    >>> sorted(spec.edges), spec.notation, spec.reaches
    ([(0, 1), (1, 2)], '(X+O1)+O2', (True, True))
    >>> ResidualSpec.coerce("X+O2").reaches
    (False, True)
    >>> len(ResidualSpec.enumerate(3))
    64
    """

    num_layers: int
    edges: frozenset[tuple[int, int]]

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_layers", checked_int(self.num_layers, "num_layers", error=ResidualSpecError))
        object.__setattr__(self, "edges", frozenset(_edge(edge) for edge in self.edges))
        for edge in self.edges:
            j, k = edge
            if not 0 <= j < k <= self.num_layers:
                raise ResidualSpecError(
                    f"skip edge {edge} needs 0 <= j < k <= {self.num_layers} (nodes X=0 .. O{self.num_layers})"
                )

    @classmethod
    def coerce(
        cls, spec: str | Iterable[Sequence[int]] | ResidualSpec, num_layers: int | None = None
    ) -> ResidualSpec:
        """Parse the paper's notation or an edge list; ``num_layers`` defaults to the highest layer named."""
        if isinstance(spec, ResidualSpec):
            if num_layers is not None and num_layers != spec.num_layers:
                return cls(num_layers, spec.edges)
            return spec
        if isinstance(spec, str):
            text = spec.strip()
            if not text:
                raise ResidualSpecError("the residual spec is empty: give none for no skips, or e.g. O1+O2, (X+O1)+O2")
            if text.lower() == "none":
                edges: set[tuple[int, int]] = set()
            elif _EDGE_LIST.match(text):
                numbers = [int(n) for n in re.findall(r"\d+", text)]
                if len(numbers) % 2 or not numbers:
                    raise ResidualSpecError(f"edge list {spec!r} must hold pairs j,k such as (0,1),(1,2) or 0-1,1-2")
                edges = set(zip(numbers[::2], numbers[1::2]))
            else:
                parser = _Parser(spec)
                parser.clauses()
                edges = parser.edges
        else:
            if not isinstance(spec, Iterable):
                raise ResidualSpecError(f"residual spec {spec!r} must be a string or pairs (j, k)")
            edges = {_edge(pair) for pair in spec}
        highest = max((k for _, k in edges), default=1)
        if num_layers is not None and highest > num_layers:
            raise ResidualSpecError(f"residual spec {spec!r} names layer {highest}, but the model has {num_layers} layers")
        return cls(num_layers or highest, frozenset(edges))

    @classmethod
    def enumerate(cls, num_layers: int) -> list[ResidualSpec]:
        """Every edge set of ``num_layers`` layers: 2^(L(L+1)/2), fewest edges first."""
        possible = [(j, k) for k in range(1, num_layers + 1) for j in range(k)]
        return [cls(num_layers, frozenset(chosen))
                for r in range(len(possible) + 1) for chosen in itertools.combinations(possible, r)]

    @classmethod
    def paper(cls, num_layers: int) -> list[ResidualSpec]:
        """The configurations the paper reports for 2 or 3 layers."""
        if num_layers not in PAPER_CONFIGS:
            raise ResidualSpecError(f"the paper reports configurations for 2 or 3 layers, not {num_layers}; use all")
        return [cls.coerce(text, num_layers) for text in PAPER_CONFIGS[num_layers]]

    def sources(self, k: int) -> list[int]:
        return sorted(j for j, t in self.edges if t == k)

    def _expression(self, k: int) -> str:
        if k == 0:
            return "X"
        terms = [self._expression(j) for j in self.sources(k)]
        return "+".join([f"({t})" if "+" in t else t for t in terms] + [f"O{k}"])

    @property
    def notation(self) -> str:
        """Canonical notation: one sum per node with sources that feeds no other node, nesting the rest."""
        if not self.edges:
            return "none"
        feeding = {j for j, _ in self.edges}
        return ", ".join(self._expression(k) for k in range(1, self.num_layers + 1) if self.sources(k) and k not in feeding)

    def _reaching(self) -> set[int]:
        """The nodes 0..L whose value reaches node L (the head) along skip edges."""
        reach = {self.num_layers}
        for k in range(self.num_layers - 1, -1, -1):
            if any(j == k and t in reach for j, t in self.edges):
                reach.add(k)
        return reach

    @property
    def reaches(self) -> tuple[bool, ...]:
        """Whether layer k's weights get a gradient: node k reaches node L along skip edges (k = 1..L)."""
        reach = self._reaching()
        return tuple(k in reach for k in range(1, self.num_layers + 1))

    @property
    def sees_input(self) -> bool:
        """Whether the head sees the raw input X (node 0 reaches node L), beside the quantum layers' outputs.

        >>> ResidualSpec.coerce("(X+O1)+O2").sees_input, ResidualSpec.coerce("O1+O2").sees_input
        (True, False)
        """
        return 0 in self._reaching()

    def node_shapes(self, input_shape: tuple[int, int], kernel_size: int = 2, stride: int | None = None,
                    padding: str = "cover") -> list[tuple[int, int]]:
        """Map shapes of h_0 .. h_L: each layer maps (H, W) as :func:`map_size` says (stride ``kernel_size`` by
        default: ceil(H/k) x ceil(W/k)); sums take the larger."""
        stride = kernel_size if stride is None else stride
        shapes = [tuple(input_shape)]
        for k in range(1, self.num_layers + 1):
            h, w = shapes[k - 1]
            out = (map_size(h, kernel_size, stride, padding), map_size(w, kernel_size, stride, padding))
            for j in self.sources(k):
                out = (max(out[0], shapes[j][0]), max(out[1], shapes[j][1]))
            shapes.append(out)
        return shapes

    def node_channels(self, layer_channels: Sequence[int], input_channels: int = 1) -> list[int]:
        """Channels of h_0 .. h_L when layer k outputs ``layer_channels[k-1]``; a sum broadcasts a one-channel
        term to the others' count and refuses two different counts above one (:func:`sum_channels`)."""
        if len(layer_channels) != self.num_layers:
            raise ResidualSpecError(f"{len(layer_channels)} layer channel counts for {self.num_layers} layers")
        channels = [input_channels]
        for k in range(1, self.num_layers + 1):
            channels.append(sum_channels(k, [layer_channels[k - 1]] + [channels[j] for j in self.sources(k)]))
        return channels

    def __str__(self) -> str:
        return self.notation


def sum_channels(k: int, counts: Sequence[int]) -> int:
    """The channels of node k's sum of terms with ``counts`` channels: one-channel terms broadcast to the rest."""
    wide = set(counts) - {1}
    if len(wide) > 1:
        raise ResidualSpecError(f"node h{k} sums maps of {', '.join(map(str, sorted(set(counts))))} channels; a sum takes "
                                "maps of one channel count (a one-channel map is added to every channel)")
    return wide.pop() if wide else 1


def map_size(size: int, kernel: int, stride: int, padding: str = "cover") -> int:
    """Outputs along one side of a map of ``size`` pixels (module docstring); refuses a kernel larger than it."""
    if padding not in WINDOW_PADDINGS:
        raise ConfigError(f"padding={padding!r} must be one of {', '.join(WINDOW_PADDINGS)}")
    if kernel > size:
        raise ConfigError(f"kernel {kernel}x{kernel} is larger than the {size}-pixel side of the map it reads")
    return (size - kernel) // stride + 1 if padding == "valid" else -(-(size - kernel) // stride) + 1
