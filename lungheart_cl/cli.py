"""Entry point `lungheart-cl` (also `python -m lungheart_cl`).

    lungheart-cl pretrain  [LightningCLI args]   contrastive pretraining
    lungheart-cl finetune  [LightningCLI args]   linear probe / fine-tune / supervised baseline
    lungheart-cl data inspect|synth|download|cache ...
    lungheart-cl predict --checkpoint C [--format csv|json] FILE.wav ...
    lungheart-cl views show --config PRETRAIN.yaml --out views.png
    lungheart-cl sweep SPEC.yaml [key=value ...]
    lungheart-cl report RUNS_DIR [--wandb]
    lungheart-cl compare RUNS_DIR --a SCHEME[:MODE] --b SCHEME[:MODE] [--metric auroc]

`pretrain` and `finetune` hand their arguments to Lightning's CLI, so every constructor argument
of the model, data module and trainer can be set from YAML or as `--trainer.max_epochs 50`.

Bad input (a missing root, a bad file, a rejected setting) is one line on stderr and exit code 2;
`--debug` anywhere on the command line (or LUNGHEART_DEBUG=1) shows its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from lungheart_cl.errors import MissingPathError, UserError

DEBUG_FLAG, DEBUG_ENV = "--debug", "LUNGHEART_DEBUG"


def _source_option(text: str) -> tuple[str, object]:
    """KEY=VALUE with the value read as YAML (``classes=[normal, abnormal]``), as ``data.source_options`` are."""
    import yaml

    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def _data_parser(sub: argparse._SubParsersAction) -> None:
    from lungheart_cl.data.sources.catalogue import downloadable
    from lungheart_cl.data.sources import dataset_names
    from lungheart_cl.data.synthetic import synthesizable

    data = sub.add_parser("data", help="dataset tools: inspect, synth, download, cache")
    verbs = data.add_subparsers(dest="verb", required=True)

    inspect = verbs.add_parser("inspect", help="summarise a dataset root and list every problem found")
    inspect.add_argument("--dataset", required=True, metavar="DATASET",
                         help=f"one of {', '.join(dataset_names())}, or the import path of your own module")
    inspect.add_argument("--root", required=True, type=Path)
    inspect.add_argument("--option", action="append", type=_source_option, default=[], metavar="KEY=VALUE",
                         help="a source option of the dataset's reader (repeat), as data.source_options in a run")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")

    synth = verbs.add_parser("synth", help="write a synthetic dataset in the official layout")
    synth.add_argument("--dataset", required=True, choices=synthesizable())
    synth.add_argument("--root", required=True, type=Path)
    synth.add_argument("--patients", type=int, default=120)
    synth.add_argument("--seed", type=int, default=0)

    download = verbs.add_parser("download", help="fetch and verify an official archive (needs internet)")
    download.add_argument("--dataset", required=True, choices=downloadable())
    download.add_argument("--root", required=True, type=Path)
    download.add_argument("--force", action="store_true", help="download again even if verified files exist, "
                          "and accept a file without a published checksum that changed since it was recorded")
    download.add_argument("--base-url", default=None, help="fetch from this mirror (the official paths under it)")

    # Every option is a run's (--config RUN.yaml, --data.KEY VALUE), parsed by the run's own parser.
    cache = verbs.add_parser("cache", prefix_chars="+", add_help=False,
                             help="build (or find) the cache a run uses: [--config RUN.yaml] [--data.KEY VALUE] "
                                  "(see `data cache --help`)")
    cache.add_argument("options", nargs=argparse.REMAINDER)


def _run_data(args: argparse.Namespace) -> int:
    if args.verb == "inspect":
        from lungheart_cl.data.inspect import format_summary, inspect_root

        summary = inspect_root(args.dataset, args.root, dict(args.option))
        print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
        return 1 if summary["problems"] else 0
    if args.verb == "synth":
        from lungheart_cl.data.synthetic import synthesize

        print(synthesize(args.dataset, args.root, patients=args.patients, seed=args.seed))
        return 0
    if args.verb == "download":
        from lungheart_cl.data.download import DownloadError, download_dataset

        try:
            print(download_dataset(args.dataset, args.root, base_url=args.base_url, force=args.force))
        except DownloadError as error:
            print(error, file=sys.stderr)
            return 2
        return 0
    if args.verb == "cache":
        from lungheart_cl.data.cache_command import run_data_cache

        return run_data_cache(args.options)
    raise AssertionError(args.verb)


def _run_report(args: argparse.Namespace) -> int:
    from lungheart_cl.report import aggregate_results, load_results, log_to_wandb, published_results, write_report

    out = args.out or args.runs_dir / "report"
    markdown = write_report(args.runs_dir, out, metric=args.metric, published=not args.no_published,
                            split=args.split)
    print(markdown.read_text())
    print(f"report written to {out}")
    if args.wandb:
        rows = aggregate_results(load_results(args.runs_dir), metric=args.metric)
        datasets = sorted({row.dataset for row in rows})
        if not args.no_published:
            rows += [row for dataset in datasets for row in published_results(dataset)]
        log_to_wandb(rows, "lungheart-cl", images=sorted(out.glob("*.png")))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user error is printed as one line (exit code 2) unless debugging is asked for."""
    from lungheart_cl.runtime import keep_freed_memory

    keep_freed_memory()  # before any tensor exists: training steps reuse freed memory instead of faulting
    argv = list(sys.argv[1:] if argv is None else argv)
    # DDP's launcher re-executes sys.argv, so its ranks see the same flag
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return _dispatch([arg for arg in argv if arg != DEBUG_FLAG])
    except UserError as error:
        if debug:
            raise
        print(f"{_rank_prefix()}lungheart-cl: error: {error}", file=sys.stderr)
        return 2


def _rank_prefix() -> str:
    """'[rank: N] ' in the other processes of a distributed run (each reports its own error), else ''."""
    rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))
    return f"[rank: {rank}] " if rank != "0" else ""


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] in ("pretrain", "finetune"):
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        from lungheart_cl.lightning_cli import run_lightning_cli

        try:
            run_lightning_cli(argv[0], argv[1:])  # a CheckpointError is a UserError: one line from `main`
        except SIGTERMException:  # Lightning's is a SystemExit with status 0: a preempted job would look done
            print(f"{_rank_prefix()}lungheart-cl {argv[0]}: interrupted by SIGTERM; nothing was exported or tested. "
                  f"Resume with --ckpt_path .../checkpoints/last.ckpt (the newest finished epoch)", file=sys.stderr)
            return 128 + signal.SIGTERM
        return 0
    parser = argparse.ArgumentParser(prog="lungheart-cl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("pretrain", help="contrastive pretraining (Lightning CLI; see `pretrain --help`)")
    sub.add_parser("finetune", help="label-efficient evaluation (Lightning CLI; see `finetune --help`)")
    _data_parser(sub)
    from lungheart_cl.predict import add_predict_parser

    add_predict_parser(sub)
    views = sub.add_parser("views", help="look at augmentations before trusting them")
    views_verbs = views.add_subparsers(dest="verb", required=True)
    show = views_verbs.add_parser("show", help="render one segment and several of its views as a PNG")
    show.add_argument("--config", action="append", required=True, help="pretraining YAML (repeat to merge)")
    show.add_argument("--out", type=Path, default=Path("views.png"))
    show.add_argument("--views", type=int, default=7, help="how many augmented views to draw")
    show.add_argument("--segment", type=int, default=None, help="cache row to show (default: the first pool row)")
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("overrides", nargs="*", help="Lightning CLI overrides, e.g. --data.root PATH (after --)")
    sweep = sub.add_parser("sweep", help="pretrain schemes and evaluate them over label fractions and seeds")
    sweep.add_argument("spec", type=Path, help="sweep YAML, e.g. experiments/finetune_grid_default.yaml")
    sweep.add_argument("overrides", nargs="*", help="dotlist overrides of the spec, e.g. seeds=[0] runs_dir=runs/x")
    report = sub.add_parser("report", help="aggregate results JSONs into tables, plots and (optionally) W&B")
    report.add_argument("runs_dir", type=Path, help="folder searched recursively for results JSONs")
    report.add_argument("--out", type=Path, default=None, help="output folder (default: RUNS_DIR/report)")
    report.add_argument("--metric", default="auroc")
    report.add_argument("--split", choices=("test", "val"), default="test",
                        help="val: the validation-only results of `finetune --test false` runs")
    report.add_argument("--no-published", action="store_true", help="do not draw the study's published values")
    report.add_argument("--wandb", action="store_true", help="also log the table and plots to W&B")
    from lungheart_cl.compare import add_compare_parser

    add_compare_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "data":
        return _run_data(args)
    if args.command == "views":
        from lungheart_cl.view_gallery import render_views

        print(render_views(args.config, args.out, args.views, args.segment, args.seed, args.overrides))
        return 0
    if args.command == "sweep":
        from lungheart_cl.sweep import run_sweep

        if not args.spec.is_file():
            raise MissingPathError(f"{args.spec}: sweep spec not found")
        return run_sweep(args.spec, args.overrides)
    if args.command == "report":
        return _run_report(args)
    if args.command == "compare":
        from lungheart_cl.compare import run_compare

        return run_compare(args)
    if args.command == "predict":
        from lungheart_cl.predict import run_predict

        return run_predict(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
