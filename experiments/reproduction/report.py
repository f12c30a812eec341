"""What one reproduction produces, and how it is written out and published into the README.

Every experiment returns a `Report`: a title, a generated verdict sentence (computed from the
measured numbers, never typed in), a markdown table and the figures it wrote. `write` puts
`report.md` next to the figures; `publish` copies the figures to `docs/figures/` and replaces
the README block between `<!-- reproduce:NAME -->` and `<!-- /reproduce:NAME -->`, so every
number in the README's Results section comes from a command.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import NamedTuple


class Report(NamedTuple):
    """name: the `--which` value; command: the command that regenerates it; verdict: one
    sentence computed from the measurements; table: markdown; figures: PNG file names in
    the experiment's output directory."""

    name: str
    title: str
    command: str
    verdict: str
    table: str
    figures: tuple[str, ...]


def markdown(report: Report, figure_dir: str) -> str:
    """The report as markdown; figures are linked as `figure_dir/NAME`."""
    images = "".join(f"![{report.name}: {figure}]({figure_dir}/{figure})\n"
                     for figure in report.figures)
    return (f"**{report.title}** — `{report.command}`\n\n{report.verdict}\n\n"
            f"{report.table.rstrip()}\n\n{images}")


def write(report: Report, directory: str) -> str:
    """Writes `report.md` (for reading) and `report.json` (for `load`) into `directory`
    (where the figures are); returns the markdown's path."""
    path = os.path.join(directory, "report.md")
    with open(path, "w") as file:
        file.write(f"# {report.name}\n\n" + markdown(report, "."))
    with open(os.path.join(directory, "report.json"), "w") as file:
        json.dump(report._asdict(), file, indent=1)
    return path


def load(directory: str) -> Report:
    """The report `write` put into `directory`; ValueError naming the file if there is none."""
    path = os.path.join(directory, "report.json")
    try:
        with open(path) as file:
            fields = json.load(file)
        return Report(**{**fields, "figures": tuple(fields["figures"])})
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"no readable report at {path}: {error}") from error


def publish(report: Report, directory: str, readme: str, figures_dir: str) -> None:
    """Copies the report's figures into `figures_dir` (as NAME_FIGURE) and replaces the
    README block of `report.name` with the report, linking the copied figures.

    Raises:
      ValueError: the README has no block `<!-- reproduce:NAME -->...<!-- /reproduce:NAME -->`.
    """
    with open(readme) as file:
        text = file.read()
    begin, end = f"<!-- reproduce:{report.name} -->", f"<!-- /reproduce:{report.name} -->"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{readme} has no block {begin} ... {end} to publish into")
    os.makedirs(figures_dir, exist_ok=True)
    published = []
    for figure in report.figures:
        name = f"{report.name}_{figure}"
        shutil.copyfile(os.path.join(directory, figure), os.path.join(figures_dir, name))
        published.append(name)
    relative = os.path.relpath(figures_dir, os.path.dirname(os.path.abspath(readme)))
    body = markdown(report._replace(figures=tuple(published)), relative.replace(os.sep, "/"))
    text = pattern.sub(lambda _: f"{begin}\n{body}{end}", text)
    with open(readme, "w") as file:
        file.write(text)
