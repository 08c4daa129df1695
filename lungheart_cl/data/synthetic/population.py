"""Drawing a small population that still covers every category, and reproducible random streams."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def stream(seed: int, *keys: int) -> np.random.Generator:
    """An independent random generator for one entity (a patient, a recording, ...).

    Keyed on the seed and the entity's position, so each entity's content does not depend on the
    order in which the others are generated.
    """
    return np.random.default_rng([seed, *keys])


def stratified(rng: np.random.Generator, weights: Mapping[str, float], n: int) -> list[str]:
    """`n` categories in random order, in proportions as close to `weights` as whole numbers allow.

    Largest-remainder rounding: a category with weight >= 1/n always appears, so even a small
    dataset has both sexes, children and adults, healthy and diseased patients.
    """
    names = list(weights)
    shares = np.array([weights[name] for name in names], dtype=float)
    shares = shares / shares.sum() * n
    counts = np.floor(shares).astype(int)
    # Hand out the remaining places by the largest remainders, ties broken at random.
    order = np.lexsort((rng.random(len(names)), -(shares - counts)))
    counts[order[: n - counts.sum()]] += 1
    drawn = [name for name, count in zip(names, counts) for _ in range(count)]
    return [drawn[i] for i in rng.permutation(n)]


def choose(rng: np.random.Generator, weights: Mapping[str, float] | Sequence[str]) -> str:
    """One category drawn with the given weights (or uniformly from a sequence)."""
    if not isinstance(weights, Mapping):
        return str(weights[int(rng.integers(len(weights)))])
    names = list(weights)
    probabilities = np.array([weights[name] for name in names], dtype=float)
    return names[int(rng.choice(len(names), p=probabilities / probabilities.sum()))]
