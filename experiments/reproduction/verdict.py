"""The verdict of a Learning-to-Optimize figure, decided on the worst of several comparisons.

One comparison (a `Cell`) is the learned optimizer against baselines tuned by one criterion on
one draw of problems, summarised by two shares: for each baseline the share of iterations
1..T at which the learned optimizer's mean margin of victory is above the baseline's
(`fractions`), and the share of iterations 1..10 at which it is the highest of all
(`highest`) (`experiments.common.learned_wins`). `status` applies the bar to one cell;
`worst_case` decides the verdict over many cells as the weakest of their statuses, and gives
each share's spread (min, max) over the cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

VERDICTS = ("not reproduced", "partly reproduced", "reproduced")  # weakest first
LEADING_SHARE = 0.8  # "above" a baseline: at this share of iterations or more
SOME_SHARE = 0.5  # "partly": above some baseline at this share or more


class Cell(NamedTuple):
    """label: which draw and tuning criterion; fractions: {baseline: share of iterations the
    learned optimizer is above it}; highest: share of iterations 1-10 it is the highest."""

    label: str
    fractions: dict[str, float]
    highest: float


class Spread(NamedTuple):
    """verdict: the weakest status of the cells; fractions: {baseline: (min, max)};
    highest: (min, max)."""

    verdict: str
    fractions: dict[str, tuple[float, float]]
    highest: tuple[float, float]


def status(cell: Cell, leaders: Sequence[str]) -> str:
    """The bar of one cell: "reproduced" when the learned optimizer is above every baseline in
    `leaders` (the paper's gradient descent, momentum and conjugate gradient) at >= 80% of
    iterations and the highest of all at every one of iterations 1-10; "partly reproduced"
    when it is above some baseline at >= 50% of iterations or the highest at some early
    iteration; else "not reproduced"."""
    if all(cell.fractions[name] >= LEADING_SHARE for name in leaders) and cell.highest == 1.0:
        return VERDICTS[2]
    if any(value >= SOME_SHARE for value in cell.fractions.values()) or cell.highest > 0:
        return VERDICTS[1]
    return VERDICTS[0]


def worst_case(cells: Sequence[Cell], leaders: Sequence[str]) -> Spread:
    """The verdict over `cells` (the weakest of their `status`es) and each share's spread.

    Raises:
      ValueError: no cells, or cells that compare with different baselines.
    """
    if not cells:
        raise ValueError("a verdict needs at least one comparison")
    names = list(cells[0].fractions)
    if any(list(cell.fractions) != names for cell in cells):
        raise ValueError(f"cells compare with different baselines: "
                         f"{[list(cell.fractions) for cell in cells]}")
    verdict = min((status(cell, leaders) for cell in cells), key=VERDICTS.index)
    fractions = {name: (min(cell.fractions[name] for cell in cells),
                        max(cell.fractions[name] for cell in cells)) for name in names}
    highest = (min(cell.highest for cell in cells), max(cell.highest for cell in cells))
    return Spread(verdict, fractions, highest)


def share_range(low: float, high: float) -> str:
    """"91-98%", or "100%" when both ends round to the same percentage."""
    low_text, high_text = f"{low:.0%}", f"{high:.0%}"
    return high_text if low_text == high_text else f"{low_text[:-1]}-{high_text}"
