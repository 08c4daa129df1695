"""A sweep's spec (`lungheart_cl.sweep`): its pretraining runs, evaluations, baselines, seeds and labelled
subsets, read from YAML with dotlist overrides and checked before anything runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lungheart_cl.data.splits import label_tag


@dataclass
class Evaluation:
    mode: str
    args: dict[str, Any] = field(default_factory=dict)
    scheme: str | None = None  # baselines name their own scheme
    name: str | None = None  # part of its run keys: tells apart evaluations of one mode (e.g. on two datasets)
    config: str | list[str] | None = None  # its own finetune YAML(s); None = the spec's finetune_config


@dataclass
class PretrainRun:
    name: str
    config: str | list[str]  # one YAML, or several merged in order (e.g. a base plus a scheme)
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Labels:
    """The labelled subset of a run: a fraction of the training patients, or a budget (a number of them)."""

    fraction: float | None = None
    budget: int | None = None

    @property
    def tag(self) -> str:
        return label_tag(self.fraction, self.budget)

    def flags(self) -> list[str]:
        """Both data arguments, always: a fraction or budget set in the finetune config cannot leak in."""
        if self.budget is not None:
            return ["--data.labelled_patients", str(self.budget), "--data.label_fraction", "1.0"]
        return ["--data.label_fraction", str(self.fraction), "--data.labelled_patients", "null"]


@dataclass
class SweepSpec:
    runs_dir: str
    finetune_config: str | list[str]
    seeds: list[int]
    evaluations: list[Evaluation]
    label_fractions: list[float] = field(default_factory=list)
    label_budgets: list[int] = field(default_factory=list)  # labelled training patients (PhysioNet: recordings)
    compare: list[list[str]] = field(default_factory=list)  # [[A, B], ...]: paired tables of B against A
    baselines: list[Evaluation] = field(default_factory=list)
    pretrain: list[PretrainRun] = field(default_factory=list)
    pretrain_seeds: list[int] = field(default_factory=lambda: [0])
    common_args: dict[str, Any] = field(default_factory=dict)  # every finetune run
    pretrain_args: dict[str, Any] = field(default_factory=dict)  # every pretraining run
    wandb_project: str = "lungheart-cl"
    test: bool = True  # false: every run scores its selected model on validation, the test split unread

    def __post_init__(self) -> None:
        if not self.label_fractions and not self.label_budgets:
            raise ValueError("needs label_fractions, label_budgets or both")
        bad = [f for f in self.label_fractions if not (isinstance(f, (int, float)) and 0 < f <= 1)]
        bad += [b for b in self.label_budgets if not (isinstance(b, int) and not isinstance(b, bool) and b > 0)]
        if bad:
            raise ValueError(f"label_fractions must lie in (0, 1] and label_budgets be positive integers; got {bad}")
        from lungheart_cl.pairing import parse_method

        for pair in self.compare:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise ValueError(f"compare entries are [A, B] pairs of SCHEME[:MODE]; got {pair!r}")
            for method in pair:
                parse_method(method)

    @property
    def labels(self) -> list[Labels]:
        """Every labelled subset of the grid: the fractions, then the budgets."""
        return [Labels(fraction=float(f)) for f in self.label_fractions] + [Labels(budget=b) for b in self.label_budgets]

    @classmethod
    def load(cls, path: Path, overrides: list[str] | None = None) -> SweepSpec:
        """Read a spec; `overrides` are OmegaConf dotlist items, e.g. ``pretrain_args.trainer.max_epochs=1``."""
        raw = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(overrides or []))
        data = OmegaConf.to_container(raw, resolve=True)
        for key in ("pretrain_args", "common_args"):
            data[key] = _flatten(data.get(key) or {})
        try:
            for key, entry in (("evaluations", Evaluation), ("baselines", Evaluation), ("pretrain", PretrainRun)):
                data[key] = [entry(**{**item, "args": _flatten(item.get("args") or {})}) for item in data.get(key, [])]
            return cls(**data)
        except (TypeError, ValueError) as error:  # a misspelled or missing key, or a bad value
            raise ValueError(f"{path}: {error}") from error


def _flatten(args: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'trainer': {'max_epochs': 1}} -> {'trainer.max_epochs': 1}: every argument as one CLI flag."""
    flat: dict[str, Any] = {}
    for key, value in args.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
