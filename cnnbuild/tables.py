"""Plain-text tables with aligned columns, as the command line prints them."""

from __future__ import annotations

from collections.abc import Container, Sequence


def aligned(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: Container[int] = ()
) -> list[str]:
    """The header, a rule, the rows and a rule, columns two spaces apart; column ``i`` is
    right-aligned when ``i in right``, left-aligned otherwise."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return [line(header), rule, *map(line, rows), rule]
