"""Writing a torch checkpoint compactly: what every shipped expert model shares."""

from __future__ import annotations

import torch


def half_precision_weights(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with the learnt weights in half precision (half the file) and buffers as they are.

    Buffers such as the time frequencies (up to 2^15·π) do not fit in half precision, and cost
    nothing to keep exact.
    """
    learnt = {name for name, _ in network.named_parameters()}
    return {
        name: value.detach().cpu().half() if name in learnt else value.detach().cpu()
        for name, value in network.state_dict().items()
    }
