"""`lungheart-cl sweep SPEC.yaml`: pretrain schemes, then evaluate them across labelled subsets and seeds.

A spec (see experiments/finetune_grid_default.yaml and experiments/paper_*.yaml) names the
pretraining runs (optional), the evaluations to run for each pretrained encoder, scheme-independent
baselines, seeds, and the labelled subsets: ``label_fractions`` (e.g. [0.1, 1.0]), ``label_budgets``
(numbers of labelled training patients, e.g. [20, 40, 80, 160]) or both; run keys say which
(``...-lf0.1-seed0``, ``...-n40-seed0``). Before the first run starts, every run's arguments are parsed
as its run will parse them, so a misspelled path or flag anywhere in the spec stops the sweep at
once. Every finished run leaves a marker in ``RUNS_DIR/done``; SIGTERM (or Ctrl-C) stops the sweep
with a non-zero status and leaves the run it interrupted unmarked, so the same command resumes with
that run. At the end the report (tables + plots) is written and the comparison table printed; a
``compare: [[A, B], ...]`` entry (each ``SCHEME[:MODE]``) adds the paired comparison of B against A
(``lungheart_cl.compare``) beside the report. ``test: false`` makes every evaluation score its selected
model on the validation patients and report those (the test split unread): the sweep that chooses a recipe.
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import sys
import time
from argparse import ArgumentError
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from lungheart_cl.sweep_spec import Evaluation, Labels, PretrainRun, SweepSpec

log = logging.getLogger(__name__)


def _config_flags(config: str | list[str]) -> list[str]:
    """One YAML or several (merged in order) as ``--config`` flags."""
    return [flag for path in ([config] if isinstance(config, str) else config) for flag in ("--config", path)]


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


@dataclass(frozen=True)
class Run:
    """One run of a sweep: its Lightning CLI command, the key of its done marker and its whole argument list."""

    command: str  # pretrain | finetune
    key: str
    args: list[str]
    encoder_of: tuple[str, int] | None = None  # a pretraining: the (scheme, seed) whose encoder it exports


class SweepInterrupted(BaseException):
    """SIGTERM stopped the sweep. A BaseException, like KeyboardInterrupt, so that no `except Exception`
    between the signal and `run_sweep` (Lightning's hooks, ours) can swallow it."""


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

    def pretrain_run(self, run: PretrainRun, seed: int) -> Run:
        """One scheme pretrained with one seed."""
        key = f"pretrain-{run.name}-seed{seed}"
        args = [*_config_flags(run.config), *_flag_args(self.spec.pretrain_args), *_flag_args(run.args),
                "--seed_everything", str(seed), "--data.seed", str(seed), "--model.scheme", run.name,
                "--trainer.default_root_dir", str(self.runs_dir / "pretrain"),
                *_loggers(self.runs_dir / "pretrain", key, run.name, "pretrain", self.spec.wandb_project)]
        return Run("pretrain", key, args, encoder_of=(run.name, seed))

    def finetune_run(self, evaluation: Evaluation, labels: Labels, seed: int, checkpoint: str | None,
                     scheme: str | None) -> Run:
        """One evaluation of one encoder (or a baseline: `checkpoint` None) on one labelled subset and seed."""
        name = scheme or evaluation.scheme or "pretrained"
        evaluation_name = f"-{evaluation.name}" if evaluation.name else ""
        key = f"{name}-{evaluation.mode}{evaluation_name}-{labels.tag}-seed{seed}"
        args = [*_config_flags(evaluation.config or self.spec.finetune_config), *_flag_args(self.spec.common_args),
                "--model.mode", evaluation.mode, "--model.results_dir", str(self.results_dir),
                *labels.flags(), "--data.label_seed", str(seed), "--data.seed", str(seed),
                "--seed_everything", str(seed), "--trainer.default_root_dir", str(self.runs_dir / "finetune")]
        if not self.spec.test:
            args += ["--test", "false"]
        if checkpoint is not None:
            args += ["--model.checkpoint", checkpoint]
        if scheme or evaluation.scheme:
            args += ["--model.scheme", name]
        args += _flag_args(evaluation.args)
        args += _loggers(self.runs_dir / "finetune", key, name, evaluation.mode, self.spec.wandb_project)
        return Run("finetune", key, args)

    def plan(self, encoder: Callable[[str, int], str]) -> Iterator[Run]:
        """Every run in order: each scheme once per pretrain seed, then the evaluations and baselines.

        `encoder(scheme, seed)` names a pretraining's exported encoder; it is called only after that
        pretraining was yielded, so `run` can execute each pretraining before its evaluations are planned.
        """
        spec = self.spec
        for run in spec.pretrain:
            for seed in spec.pretrain_seeds:
                yield self.pretrain_run(run, seed)
        for seed in spec.seeds:
            # evaluation seed s uses pretrain seed s when there is one, else the first (so one pretraining can
            # serve several evaluation seeds)
            pretrain_seed = seed if seed in spec.pretrain_seeds else spec.pretrain_seeds[0]
            targets = [(run.name, encoder(run.name, pretrain_seed)) for run in spec.pretrain] or [(None, "latest")]
            for labels in spec.labels:
                for scheme, checkpoint in targets:
                    for evaluation in spec.evaluations:
                        yield self.finetune_run(evaluation, labels, seed, checkpoint, scheme)
                for baseline in spec.baselines:
                    yield self.finetune_run(baseline, labels, seed, None, None)

    def check(self) -> list[str]:
        """Parse every unfinished run's arguments as its run will (config files read, flags, types and class
        paths checked), building nothing; one line per bad run. Run before the first run starts."""
        from lungheart_cl.lightning_cli import make_cli

        parsers: dict[str, Any] = {}
        problems, keys = [], set()
        for run in self.plan(lambda scheme, seed: f"encoder-of-pretrain-{scheme}-seed{seed}.pt"):
            if run.key in keys:  # the second would be skipped as done
                problems.append(f"{run.key}: two runs of the spec share this key; give evaluations of one mode "
                                f"(or baselines of one scheme and mode) each a name")
            keys.add(run.key)
            if self._finished(run.key) is not None:
                continue
            if run.command not in parsers:  # building a parser takes seconds, parsing with it a fraction of one
                parsers[run.command] = make_cli(run.command, ["--seed_everything", "false"],  # seeds nothing now
                                                instantiate=False).parser
            try:
                parsers[run.command].parse_args(run.args)
            except ArgumentError as error:
                problems.append(f"{run.key}: {' '.join(str(error).split())}")
        return problems

    def execute(self, run: Run) -> dict:
        """Run one Lightning CLI command and mark it done (an interrupted or failed run raises, unmarked)."""
        from lungheart_cl.classifier_callbacks import results_path
        from lungheart_cl.lightning_cli import run_lightning_cli

        started = time.time()
        cli = run_lightning_cli(run.command, run.args)
        try:
            if run.encoder_of is not None:
                payload = {"encoder": str(Path(cli.trainer.checkpoint_callback.dirpath) / "encoder-best.pt")}
            else:
                payload = {"results": str(results_path(cli.trainer))}
            payload["seconds"] = round(time.time() - started, 1)
            self._mark(run.key, payload)
            return payload
        finally:
            _finish_wandb()
            del cli  # the last reference; trainer, model and data module hold cycles that only gc frees
            gc.collect()

    def run(self) -> Path:
        """Execute every run not done yet, in order, then write the report."""
        encoders: dict[tuple[str, int], str] = {}
        for run in self.plan(lambda scheme, seed: encoders[scheme, seed]):
            done = self._finished(run.key)
            if done is not None:
                log.info("skipping %s (done)", run.key)
            else:
                done = self.execute(run)
            if run.encoder_of is not None:
                encoders[run.encoder_of] = done["encoder"]
        return self.report()

    def report(self) -> Path:
        """Write the report (and the spec's paired comparisons beside it) and print them."""
        from lungheart_cl.report import write_report

        split = "test" if self.spec.test else "val"
        markdown = write_report(self.results_dir, self.runs_dir / "report", split=split)
        print(markdown.read_text())
        if self.spec.compare:
            from lungheart_cl.compare import write_comparisons

            paired = write_comparisons(self.results_dir, self.runs_dir / "report", self.spec.compare, split=split)
            print(paired.read_text())
        return markdown


def _finish_wandb() -> None:
    """Close the W&B run, so that the next in-process run starts its own."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except ImportError:
        pass


@contextmanager
def _sigterm_stops_the_sweep() -> Iterator[None]:
    """SIGTERM raises SweepInterrupted at once, wherever the sweep is. Lightning keeps this handler and calls
    it after its own during fit/test, so the exception also ends a run inside the trainer (which tears the
    run down); without it Lightning ends a fit with SIGTERMException, a SystemExit with status 0."""
    def stop(signum: int, frame: FrameType | None) -> None:
        raise SweepInterrupted(f"received {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_sweep(spec_path: Path, overrides: list[str] | None = None) -> int:
    """0: every run done, report written; 2: bad spec or run arguments (each bad run named on stderr, nothing
    run), or a comparison of the spec that cannot be made (runs kept, report written); 128 + SIGTERM: interrupted
    (finished runs kept; the same command resumes with the interrupted run)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from lungheart_cl.pairing import ComparisonError

    sweep = Sweep(SweepSpec.load(spec_path, overrides))
    problems = sweep.check()
    for problem in problems:
        print(f"sweep: {problem}", file=sys.stderr)
    if problems:
        print(f"sweep: {spec_path}: {len(problems)} run(s) have bad arguments; nothing was run", file=sys.stderr)
        return 2
    try:
        with _sigterm_stops_the_sweep():
            sweep.run()
    except (SweepInterrupted, SIGTERMException) as stop:  # SIGTERMException: a DDP rank told by rank 0
        print(f"sweep: interrupted ({stop or 'SIGTERM'}); finished runs are kept and the same command resumes",
              file=sys.stderr)
        return 128 + signal.SIGTERM
    except ComparisonError as error:
        print(f"sweep: every run is done and the report written, but a comparison failed: {error}", file=sys.stderr)
        return 2
    return 0
