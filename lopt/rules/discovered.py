"""Rules found by lopt's own searches, best first, with their provenance.

    opt = lopt.rules.to_optax(lopt.rules.DISCOVERED["suite_1"], 1e-3, key=jax.random.key(0))
    lopt.rules.discovered.provenance()["rules"][0]["scores"]

`DISCOVERED` is an ordered mapping name -> Rule, read from `discovered.json` next to this file,
which `experiments.reproduce --which=nos_suite --export_pretrained` writes: the command, seed,
search preset and suite that found the rules, and each rule's text and scores (normalised
against tuned Adam; see that experiment's README block). Best first means best on the
selection seeds by the rule's worst suite task ("selection" in its scores); the fresh-seed
scores recorded with each rule played no part in choosing or ordering them.
"""

from __future__ import annotations

import json
import os

from lopt.rules.expression import Rule
from lopt.rules.text import parse

PROVENANCE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "discovered.json")


def provenance(path: str = PROVENANCE_FILE) -> dict:
    """The provenance file's contents: {"command", "seed", "preset", "suite", "held_out",
    "normalisation", "rules": [{"name", "rule", "scores"}, ...] best first}; an empty list of
    rules if the file is absent."""
    if not os.path.exists(path):
        return {"rules": []}
    with open(path) as file:
        return json.load(file)


def load(path: str = PROVENANCE_FILE) -> dict[str, Rule]:
    """{name: Rule} of a provenance file, best first."""
    return {entry["name"]: parse(entry["rule"]) for entry in provenance(path)["rules"]}


DISCOVERED = load()
