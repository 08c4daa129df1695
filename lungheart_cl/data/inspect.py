"""`lungheart-cl data inspect`: what a dataset root holds, and every problem found, per file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from lungheart_cl.data.records import DataError, Problem, SourceDataset
from lungheart_cl.data.sources import read_source


def _cycle_class(crackle: bool, wheeze: bool) -> str:
    return {(False, False): "normal", (True, False): "crackle", (False, True): "wheeze", (True, True): "both"}[
        (crackle, wheeze)]


def summarize(source: SourceDataset) -> dict:
    """Counts a user checks before training: recordings, patients, classes, rates, devices, problems."""
    recordings, patients = source.recordings, source.patients
    cycles = Counter(_cycle_class(e.crackle, e.wheeze) for r in recordings for e in r.events)
    return {
        "dataset": source.name,
        "root": str(source.root),
        "recordings": len(recordings),
        "patients": len({r.patient_id for r in recordings}),
        "hours": round(sum(r.duration_s for r in recordings) / 3600, 3),
        "cycles": dict(sorted(cycles.items())) if cycles else {},
        "recording_labels": dict(sorted(Counter(r.label or "none" for r in recordings).items())),
        "diagnoses": dict(sorted(Counter(p.diagnosis or "none" for p in patients.values()).items())),
        "murmur": dict(sorted(Counter(p.murmur or "none" for p in patients.values()).items())),
        "sample_rates": dict(sorted(Counter(r.sample_rate for r in recordings).items())),
        "channels": dict(sorted(Counter(r.num_channels for r in recordings).items())),
        "devices": dict(sorted(Counter(r.device for r in recordings).items())),
        "locations": dict(sorted(Counter(r.location for r in recordings).items())),
        "age_groups": dict(sorted(Counter(p.age_group for p in patients.values()).items())),
        "sexes": dict(sorted(Counter(p.sex for p in patients.values()).items())),
        "official_split": dict(sorted(Counter(r.official_split or "none" for r in recordings).items())),
        "notes": list(source.notes),
        "problems": [{"file": str(p.path), "problem": p.message} for p in source.problems],
    }


def inspect_root(dataset: str, root: Path) -> dict:
    """Read with skip_bad so every bad file is listed, not just the first one."""
    try:
        return summarize(read_source(dataset, root, skip_bad=True))
    except DataError as error:  # a dataset-level problem (e.g. missing metadata file)
        problem = Problem.from_error(error)
        return {"dataset": dataset, "root": str(root), "problems": [{"file": str(problem.path),
                                                                     "problem": problem.message}]}


def format_summary(summary: dict) -> str:
    lines = [f"{summary['dataset']} at {summary['root']}"]
    for key, value in summary.items():
        if key in ("dataset", "root", "notes", "problems") or value in ({}, []):
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        lines.append(f"  {key}: {value}")
    for note in summary.get("notes", []):
        lines.append(f"  note: {note}")
    problems = summary.get("problems", [])
    lines.append(f"  problems: {len(problems)}" + ("" if problems else " (none)"))
    lines += [f"    {p['file']}: {p['problem']}" for p in problems]
    return "\n".join(lines)
