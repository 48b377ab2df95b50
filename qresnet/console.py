"""What both command-line front ends share: plain tables and the --initial-layout value."""

from __future__ import annotations

from collections.abc import Sequence

from qresnet.errors import QresnetError


def print_table(rows: list[dict], columns: Sequence[str]) -> None:
    """Left-aligned columns; lists and tuples print comma-joined.

    >>> print_table([{"a": 1, "b": (2, 3)}], ["a", "b"])
    a  b   
    1  2, 3
    """
    cells = [[", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v) for v in (r[c] for c in columns)]
             for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def parse_layout(text: str | None) -> tuple[int, ...] | None:
    """``"3,2,1,0"`` -> (3, 2, 1, 0); None stays None."""
    if not text:
        return None
    try:
        return tuple(int(q) for q in text.split(","))
    except ValueError:
        raise QresnetError(f"--initial-layout {text!r} must be comma-separated qubit indices, e.g. 3,2,1,0") from None
