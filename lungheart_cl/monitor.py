"""Online evaluation of an encoder during pretraining: weighted kNN and AUROC on validation patients.

Only the labelled training bank and the validation split are ever passed here, never the test split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc, multiclass_auroc


def knn_class_scores(bank: Tensor, bank_labels: Tensor, queries: Tensor, num_classes: int, k: int = 10,
                     temperature: float = 0.07, chunk: int = 1024) -> Tensor:
    """Class scores of each query from its k most cosine-similar bank items, weighted by exp(sim/T)
    (the kNN monitor of InstDisc / solo-learn). Returns (num_queries, num_classes), rows summing to 1."""
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, bank.shape[0])
    scores = []
    for start in range(0, queries.shape[0], chunk):
        q = F.normalize(queries[start:start + chunk].float(), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        weights = (sim / temperature).exp()
        one_hot = F.one_hot(bank_labels[idx], num_classes).float()
        votes = (weights.unsqueeze(-1) * one_hot).sum(1)
        scores.append(votes / votes.sum(1, keepdim=True))
    return torch.cat(scores)


def auroc(scores: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Binary AUROC of the positive-class score, or macro one-vs-rest AUROC for more classes."""
    if num_classes == 2:
        positive = scores[:, 1] if scores.ndim == 2 else scores
        return binary_auroc(positive.float(), labels)
    return multiclass_auroc(scores.float(), labels, num_classes=num_classes, average="macro")
