"""`lungheart-cl sweep SPEC.yaml`: pretrain schemes, then evaluate them across label fractions and seeds.

A spec (see experiments/finetune_grid_default.yaml and experiments/paper_*.yaml) names the
pretraining runs (optional), the evaluations to run for each pretrained encoder, scheme-independent
baselines, label fractions and seeds. Every finished run leaves a marker in ``RUNS_DIR/done``, so an
interrupted sweep resumes where it stopped. At the end the report (tables + plots) is written and
the comparison table printed.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    mode: str
    args: dict[str, Any] = field(default_factory=dict)
    scheme: str | None = None  # baselines name their own scheme


@dataclass
class PretrainRun:
    name: str
    config: str | list[str]  # one YAML, or several merged in order (e.g. a base plus a scheme)
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepSpec:
    runs_dir: str
    finetune_config: str | list[str]
    label_fractions: list[float]
    seeds: list[int]
    evaluations: list[Evaluation]
    baselines: list[Evaluation] = field(default_factory=list)
    pretrain: list[PretrainRun] = field(default_factory=list)
    pretrain_seeds: list[int] = field(default_factory=lambda: [0])
    common_args: dict[str, Any] = field(default_factory=dict)  # every finetune run
    pretrain_args: dict[str, Any] = field(default_factory=dict)  # every pretraining run
    wandb_project: str = "lungheart-cl"

    @classmethod
    def load(cls, path: Path, overrides: list[str] | None = None) -> SweepSpec:
        """Read a spec; `overrides` are OmegaConf dotlist items, e.g. ``pretrain_args.trainer.max_epochs=1``."""
        raw = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(overrides or []))
        data = OmegaConf.to_container(raw, resolve=True)
        for key in ("pretrain_args", "common_args"):
            data[key] = _flatten(data.get(key) or {})
        for key, entry in (("evaluations", Evaluation), ("baselines", Evaluation), ("pretrain", PretrainRun)):
            data[key] = [entry(**{**item, "args": _flatten(item.get("args") or {})}) for item in data.get(key, [])]
        return cls(**data)


def _config_flags(config: str | list[str]) -> list[str]:
    """One YAML or several (merged in order) as ``--config`` flags."""
    return [flag for path in ([config] if isinstance(config, str) else config) for flag in ("--config", path)]


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


def _flag_args(args: dict[str, Any]) -> list[str]:
    """{'model.lr': 0.01, 'model.checkpoint': None} -> ['--model.lr', '0.01', '--model.checkpoint', 'null']."""
    flat: list[str] = []
    for key, value in args.items():
        flat += [f"--{key}", "null" if value is None else json.dumps(value) if isinstance(value, (list, dict))
                 else str(value)]
    return flat


def _loggers(save_dir: Path, name: str, group: str, job_type: str, project: str) -> list[str]:
    """CSV + offline-first W&B loggers for one run, grouped by scheme so W&B compares fractions."""
    loggers = [{"class_path": "lungheart_cl.tracking.RunFolderCSVLogger",
                "init_args": {"save_dir": str(save_dir), "name": name}},
               {"class_path": "lungheart_cl.tracking.OfflineFirstWandbLogger",
                "init_args": {"project": project, "save_dir": str(save_dir), "name": name, "group": group,
                              "job_type": job_type}}]
    return ["--trainer.logger", json.dumps(loggers)]


class Sweep:
    def __init__(self, spec: SweepSpec):
        self.spec = spec
        self.runs_dir = Path(spec.runs_dir)
        self.done_dir = self.runs_dir / "done"
        self.results_dir = self.runs_dir / "results"

    def _marker(self, key: str) -> Path:
        return self.done_dir / f"{key}.json"

    def _finished(self, key: str) -> dict | None:
        marker = self._marker(key)
        return json.loads(marker.read_text()) if marker.is_file() else None

    def _mark(self, key: str, payload: dict) -> None:
        self.done_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._marker(key).with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(self._marker(key))

    def pretrain(self, run: PretrainRun, seed: int) -> str:
        """Pretrain one scheme with one seed (or reuse a finished run); returns its exported encoder."""
        key = f"pretrain-{run.name}-seed{seed}"
        if (done := self._finished(key)) is not None:
            log.info("skipping %s (done)", key)
            return done["encoder"]
        from lungheart_cl.lightning_cli import run_lightning_cli

        args = [*_config_flags(run.config), *_flag_args(self.spec.pretrain_args), *_flag_args(run.args),
                "--seed_everything", str(seed), "--data.seed", str(seed), "--model.scheme", run.name,
                "--trainer.default_root_dir", str(self.runs_dir / "pretrain"),
                *_loggers(self.runs_dir / "pretrain", key, run.name, "pretrain", self.spec.wandb_project)]
        started = time.time()
        cli = run_lightning_cli("pretrain", args)
        encoder = str(Path(cli.trainer.checkpoint_callback.dirpath) / "encoder-best.pt")
        self._mark(key, {"encoder": encoder, "seconds": round(time.time() - started, 1)})
        _release(cli)
        return encoder

    def evaluate(self, evaluation: Evaluation, fraction: float, seed: int, checkpoint: str | None,
                 scheme: str | None) -> None:
        name = scheme or evaluation.scheme or "pretrained"
        key = f"{name}-{evaluation.mode}-lf{fraction:g}-seed{seed}"
        if self._finished(key) is not None:
            log.info("skipping %s (done)", key)
            return
        from lungheart_cl.lightning_cli import run_lightning_cli

        args = [*_config_flags(self.spec.finetune_config), *_flag_args(self.spec.common_args),
                "--model.mode", evaluation.mode, "--model.results_dir", str(self.results_dir),
                "--data.label_fraction", str(fraction), "--data.label_seed", str(seed), "--data.seed", str(seed),
                "--seed_everything", str(seed), "--trainer.default_root_dir", str(self.runs_dir / "finetune")]
        if checkpoint is not None:
            args += ["--model.checkpoint", checkpoint]
        if scheme or evaluation.scheme:
            args += ["--model.scheme", name]
        args += _flag_args(evaluation.args)
        args += _loggers(self.runs_dir / "finetune", key, name, evaluation.mode, self.spec.wandb_project)
        started = time.time()
        cli = run_lightning_cli("finetune", args)
        results = Path(self.results_dir) / f"{cli.model.run_name()}.json"
        self._mark(key, {"results": str(results), "seconds": round(time.time() - started, 1)})
        _release(cli)

    def run(self) -> Path:
        spec = self.spec
        # each scheme pretrained once per pretrain seed; evaluation seed s uses pretrain seed s when
        # there is one, else the first (so one pretraining can serve several evaluation seeds)
        encoders = {(run.name, seed): self.pretrain(run, seed) for run in spec.pretrain for seed in spec.pretrain_seeds}
        for seed in spec.seeds:
            pretrain_seed = seed if seed in spec.pretrain_seeds else spec.pretrain_seeds[0]
            targets = [(run.name, encoders[run.name, pretrain_seed]) for run in spec.pretrain] or [(None, "latest")]
            for fraction in spec.label_fractions:
                for scheme, checkpoint in targets:
                    for evaluation in spec.evaluations:
                        self.evaluate(evaluation, fraction, seed, checkpoint, scheme)
                for baseline in spec.baselines:
                    self.evaluate(baseline, fraction, seed, None, None)
        return self.report()

    def report(self) -> Path:
        from lungheart_cl.report import write_report

        markdown = write_report(self.results_dir, self.runs_dir / "report")
        print(markdown.read_text())
        return markdown


def _release(cli) -> None:
    """Close the W&B run and free the model before the next in-process run."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except ImportError:
        pass
    del cli
    gc.collect()


def run_sweep(spec_path: Path, overrides: list[str] | None = None) -> Path:
    return Sweep(SweepSpec.load(spec_path, overrides)).run()
