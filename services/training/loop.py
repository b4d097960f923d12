"""The optimisation loop the experts' heads share: AdamW, a cosine decay, and the best step kept by val.

Small training sets are memorised fast, so the loop scores the model on val every `eval_every`
steps and returns the weights of the best-scoring step rather than the last.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from geoloc.evaluation.metrics import Metrics


def minibatch_draw(
    n: int, batch_size: int, photo_weight: np.ndarray | None, device: str = "cpu"
) -> Callable[[], torch.Tensor]:
    """A function giving a fresh minibatch of photo indices [batch_size] per call: uniform draws, or,
    with weights [n], draws in proportion to them, so that the mean loss is the weighted one in
    expectation (a photographer's burst then counts as the weights say, not as its size)."""
    if photo_weight is None:
        return lambda: torch.randint(n, (batch_size,), device=device)
    weight = torch.as_tensor(np.asarray(photo_weight, dtype=np.float64), dtype=torch.float64)
    if weight.shape != (n,) or not bool(torch.all(weight >= 0)) or float(weight.sum()) <= 0:
        raise ValueError(f"photo weights must be {n} non-negative numbers, not all zero")
    return lambda: torch.multinomial(weight, batch_size, replacement=True).to(device)


@dataclass
class BestStep:
    step: int
    val: Metrics
    history: list[tuple[int, float]]  # (step, val GeoScore) at every evaluation


def train_keeping_best(
    network: torch.nn.Module,
    batch_loss: Callable[[], torch.Tensor],
    evaluate: Callable[[], Metrics],
    steps: int,
    eval_every: int,
    learning_rate: float,
    weight_decay: float,
    log: Callable[[str], None] = print,
) -> BestStep:
    """Runs `steps` optimiser steps on batch_loss() (a fresh minibatch each call) and loads the weights
    of the evaluation with the highest val GeoScore into `network`, left in eval mode."""
    optimizer = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(step / steps, 1.0)))
    )
    best: tuple[float, int, dict | None, Metrics | None] = (-1.0, 0, None, None)
    history = []
    for step in range(1, steps + 1):
        network.train()
        loss = batch_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % eval_every == 0 or step == steps:
            network.eval()
            metrics = evaluate()
            history.append((step, metrics.geoscore))
            log(
                f"  step {step}: loss {loss.item():.4f}, val GeoScore {metrics.geoscore:.1f}, "
                f"median {metrics.median_km:.0f} km"
            )
            if metrics.geoscore > best[0]:
                best = (metrics.geoscore, step, copy.deepcopy(network.state_dict()), metrics)
    network.load_state_dict(best[2])
    network.eval()
    return BestStep(best[1], best[3], history)
