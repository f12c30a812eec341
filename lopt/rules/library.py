"""Named rules: the classic optimizers and the 16 rules of Table 1 of Bello et al. (2017).

Every entry is a `Rule` in the text form of `lopt.rules.text`; `to_optax(LIBRARY[name], lr)`
gives the optimizer. `sgd` is g; `momentum` is m̂, the bias-corrected EMA of g (heavy-ball
momentum 0.9 with the step scaled by 0.1, up to bias correction); `adam` and `rmsprop` are
those optimizers' directions with ε = 1e-8; `powersign` is g·e^{sign(g)·sign(m̂)} and `addsign`
(1 + sign(g)·sign(m̂))·g, the paper's discovered rules without sign decay (see
`lopt.rules.named` for the versions with a base, α and decay schedules).

`TABLE_1` lists the names of the 16 Table-1 rules in the paper's order; the paper writes
drop(m̂, 0.1)/(e^{g²} + ε), which is `drop(m, 0.1) / exp(g2)` here since `/` adds ε.
"""

from __future__ import annotations

from lopt.rules.expression import Rule
from lopt.rules.text import parse

_TEXTS = {
    "sgd": "g",
    "momentum": "m",
    "adam": "adam",
    "rmsprop": "rmsprop",
    "powersign": "g * exp(sign(g) * sign(m))",
    "addsign": "(one + sign(g) * sign(m)) * g",
    "powersign_plus_clip": "(exp(sign(g) * sign(m)) + clip(g, 1e-4)) * g",
    "clip_m_exp_v": "clip(m, 1e-4) * exp(v)",
    "m_exp_v": "m * exp(v)",
    "powersign_drop30": "drop(g, 0.3) * exp(sign(g) * sign(m))",
    "m_exp_g2": "m * exp(g2)",
    "drop10_m_over_exp_g2": "drop(m, 0.1) / exp(g2)",
    "powersign_drop10": "drop(g, 0.1) * exp(sign(g) * sign(m))",
    "clip_rmsprop_plus_drop30_m": "clip(rmsprop, 1e-5) + drop(m, 0.3)",
    "adam_powersign": "adam * exp(sign(g) * sign(m))",
    "adam_exp_m": "adam * exp(m)",
    "g_plus_drop30_m": "g + drop(m, 0.3)",
    "drop10_m_exp_g3": "drop(m, 0.1) * exp(g3)",
    "g_minus_clip_g2": "g - clip(g2, 1e-4)",
    "exp_g_minus_exp_m": "exp(g) - exp(m)",
    "drop30_m_exp_weight": "drop(m, 0.3) * exp(1e-3*w)",
}

TABLE_1 = (
    "powersign_plus_clip",
    "clip_m_exp_v",
    "m_exp_v",
    "powersign",
    "powersign_drop30",
    "m_exp_g2",
    "drop10_m_over_exp_g2",
    "powersign_drop10",
    "clip_rmsprop_plus_drop30_m",
    "adam_powersign",
    "adam_exp_m",
    "g_plus_drop30_m",
    "drop10_m_exp_g3",
    "g_minus_clip_g2",
    "exp_g_minus_exp_m",
    "drop30_m_exp_weight",
)

LIBRARY: dict[str, Rule] = {name: parse(text) for name, text in _TEXTS.items()}
