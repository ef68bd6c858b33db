"""Loss and accuracy of a model on a whole split (no augmentation, no gradient)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.data import Dataset, Split, evaluate_batches


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, split: Split, batch_size: int,
             device: torch.device) -> tuple[float, float]:
    """(mean cross-entropy, accuracy in percent); leaves the model in eval mode."""
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for x, y in evaluate_batches(data, split, batch_size, device):
        out = model(x)
        total_loss += F.cross_entropy(out, y, reduction="sum").double()
        correct += (out.argmax(1) == y).sum()
    n = len(split)
    return float(total_loss) / n, 100.0 * float(correct) / n
