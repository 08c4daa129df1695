"""`lungheart-cl data cache`: build ahead the cache a run will use, from the run's own data options.

    lungheart-cl data cache --config experiments/physionet2016/pretrain.yaml --data.root ../shared/data/physionet2016

The options are a run's: its YAML(s) (``--config``, repeatable, merged in order) and ``--data.*``
overrides, parsed by Lightning's argument parser against the data module's signature exactly as
`lungheart-cl pretrain` / `finetune` parse them. Only the data section is used; the model and trainer
sections of a run YAML are accepted and ignored. So the cache directory (its key hashes the data and
the cache options, e.g. ``normalization``) is the one the run will find.
"""

from __future__ import annotations

from jsonargparse import ActionConfigFile, ArgumentError
from lightning.pytorch.cli import LightningArgumentParser

from lungheart_cl.data.cache import SegmentCache
from lungheart_cl.data.datamodule import ClassificationDataModule, PretrainDataModule, SoundDataModule

DESCRIPTION = ("Build (or find) the cache that a run with these options uses: give the run's --config YAML(s) and "
               "--data.* overrides, as for `lungheart-cl pretrain` or `finetune` (model and trainer sections are "
               "ignored). Prints the cache directory, its key, whether it was built or found, and every dropped file.")
# A run YAML's data section belongs to one of these; tried in this order.
DATA_MODULES = {"pretrain": PretrainDataModule, "finetune": ClassificationDataModule}
# The other top-level keys of a run YAML (LightningCLI's), accepted so that a run's file parses here.
RUN_SECTIONS = ("model", "trainer", "optimizer", "lr_scheduler")


def data_parser(data_class: type[SoundDataModule], *, exit_on_error: bool = True) -> LightningArgumentParser:
    """A parser of a run's command line that types its ``data`` section by `data_class`'s signature."""
    parser = LightningArgumentParser(prog="lungheart-cl data cache", description=DESCRIPTION, parser_mode="omegaconf",
                                     exit_on_error=exit_on_error)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="a run's YAML (repeat to merge)")
    parser.add_lightning_class_args(data_class, "data")
    for section in RUN_SECTIONS:
        parser.add_argument(f"--{section}", type=dict | None, default=None, help="(a run's; ignored here)")
    parser.add_argument("--seed_everything", type=bool | int | None, default=None, help="(a run's; ignored here)")
    parser.add_argument("--ckpt_path", type=str | None, default=None, help="(a run's; ignored here)")
    return parser


def parse_data_module(options: list[str]) -> SoundDataModule:
    """The data module a run with these options builds (pretrain's if its data section fits, else finetune's)."""
    errors = []
    for command, data_class in DATA_MODULES.items():
        parser = data_parser(data_class, exit_on_error=False)
        try:
            config = parser.parse_args(options)
        except ArgumentError as error:
            errors.append(f"as a {command} run: {error}")
            continue
        return parser.instantiate_classes(config).data
    # Neither fits: let the pretrain parser report its error (usage and exit status 2), naming both.
    data_parser(PretrainDataModule).error("the data options fit no run:\n  " + "\n  ".join(errors))
    raise AssertionError("unreachable: parser.error exits")


def format_report(data: SoundDataModule, cache: SegmentCache) -> str:
    """What was built (or found) and what it leaves out, every dropped file named."""
    config = data.cache_config
    pooled = "sources" in cache.info  # a pool: its sources are listed below
    what = (f"pool of {len(cache.info['sources'])} sources" if pooled else
            f"dataset {data.dataset}, root {data.data_root}, source_options {data.source_options}")
    lines = [
        f"cache {'built' if cache.built else 'found (already built)'}: {cache.directory}",
        f"  key {cache.key}; {len(cache)} segments of {config.segment_samples} samples from "
        f"{cache.info['num_recordings']} recordings",
        f"  options: {what}, sample_rate {config.sample_rate}, "
        f"segment_seconds {config.segment_seconds}, hop_seconds {config.hop_seconds}, padding {config.padding}, "
        f"normalization {config.normalization}",
        f"  dropped: {len(cache.dropped)}" + ("" if cache.dropped else " (none)"),
    ]
    lines += [f"    {d['stage']}: {d['file']}: {d['problem']}" for d in cache.dropped]
    lines += [f"  source {s['name']} ({s['dataset']}, {s['root']}): {s['cache']} ({s['segments']} segments)"
              for s in cache.info.get("sources", [])]
    return "\n".join(lines)


def run_data_cache(options: list[str]) -> int:
    """Parse a run's options, build (or find) its cache, print what it is and what it dropped."""
    data = parse_data_module(options)
    cache = data.prepare_cache()
    print(format_report(data, cache))
    return 0
