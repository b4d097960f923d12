"""The optimisation loop the experts' heads share: AdamW, a cosine decay, and the best step kept by val.

Small training sets are memorised fast, so the loop scores the model on val every `eval_every`
steps and returns the weights of the best-scoring step rather than the last.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


@dataclass(frozen=True)
class BatchShards:
    """Each optimiser step's minibatch cut into `count` equal shards, each drawn and its loss
    computed under its own random stream (seeded by seed, shard and step); this process computes
    the shards in `mine`. Run as `count` processes of a torch.distributed group (torchrun: gloo on
    CPU, NCCL on GPU), each computes its rank's shard and the gradients are summed across ranks:
    the same draws, the same global batch and the same update as one process computing every
    shard, up to the order of the floating-point sums."""

    count: int = 1
    mine: tuple[int, ...] = (0,)
    seed: int = 0
    distributed: bool = False

    @classmethod
    def in_one_process(cls, count: int, seed: int = 0) -> BatchShards:
        if count < 1:
            raise ValueError(f"a minibatch is cut into at least 1 shard, got {count}")
        return cls(count, tuple(range(count)), seed, False)

    @classmethod
    def of_process_group(cls, seed: int = 0) -> BatchShards:
        """One shard per rank of the initialised default process group."""
        import torch.distributed as dist

        return cls(dist.get_world_size(), (dist.get_rank(),), seed, True)

    @property
    def leads(self) -> bool:
        """Whether this process writes results and logs: the first rank, or the only process."""
        return 0 in self.mine

    def shard_size(self, batch_size: int) -> int:
        if batch_size % self.count:
            raise ValueError(f"a minibatch of {batch_size} does not cut into {self.count} equal shards")
        return batch_size // self.count

    def stream_seed(self, shard: int, step: int) -> int:
        return (self.seed * 1_000_003 + shard) * 1_000_033 + step


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
    shards: BatchShards | None = None,
) -> BestStep:
    """Runs `steps` optimiser steps on batch_loss() (a fresh minibatch each call) and loads the weights
    of the evaluation with the highest val GeoScore into `network`, left in eval mode. With `shards`,
    batch_loss() gives one shard's loss (its draws of shards.shard_size photos), called once per shard
    of this process under that shard's random stream; every process evaluates the same weights alike,
    so all keep the same step."""
    optimizer = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(step / steps, 1.0)))
    )
    best: tuple[float, int, dict | None, Metrics | None] = (-1.0, 0, None, None)
    history = []
    for step in range(1, steps + 1):
        network.train()
        optimizer.zero_grad(set_to_none=True)
        if shards is None:
            loss = batch_loss()
            loss.backward()
        else:
            loss = _sharded_backward(network, batch_loss, shards, step)
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


def _sharded_backward(
    network: torch.nn.Module, batch_loss: Callable[[], torch.Tensor], shards: BatchShards, step: int
) -> torch.Tensor:
    """The gradient of the mean shard loss, summed over the processes' shards; returns that mean."""
    total = torch.zeros((), device=next(network.parameters()).device)
    for shard in shards.mine:
        with shard_stream(shards, shard, step, network):
            loss = batch_loss() / shards.count
        loss.backward()
        total = total + loss.detach()
    return sum_over_processes([p for p in network.parameters() if p.requires_grad], shards, total)


@contextmanager
def shard_stream(shards: BatchShards, shard: int, step: int, network: torch.nn.Module) -> Iterator[None]:
    """Random draws inside come from the shard's own stream for this step; the process's stream is
    left as it was, so that draws shared by every shard stay in step across processes."""
    cuda = sorted({p.device.index or 0 for p in network.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(shards.stream_seed(shard, step))
        yield


def sum_over_processes(parameters: list[torch.Tensor], shards: BatchShards, total: torch.Tensor) -> torch.Tensor:
    """Sums the parameters' gradients (and `total`, a loss to log) over the processes of a
    distributed run; a parameter some shard left without gradient takes part with zeros."""
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if shards.distributed:
        import torch.distributed as dist

        for p in parameters:
            dist.all_reduce(p.grad)
        dist.all_reduce(total)
    return total
