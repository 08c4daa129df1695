"""The classifier's evaluation modes, in the order reports list them: the one list of them."""

from __future__ import annotations

from typing import Literal, get_args

Mode = Literal["linear", "logistic", "finetune", "scratch"]
MODES: tuple[Mode, ...] = get_args(Mode)
