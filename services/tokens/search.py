"""Decoding strategies over the token decoder: greedy, beam search, and sampling with selection.

Each returns whole token sequences with their log-probabilities under the model. A sequence of
fewer than 11 tokens (max_level below 20) is a coarser cell: decoding simply stops early.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from geoloc.tokens.decoder import TOKEN_COUNT, Cache, TokenDecoder


@dataclass(frozen=True)
class Decoded:
    """Sequences [n, length] with their log-probabilities [n], most probable first."""

    tokens: torch.Tensor
    log_probs: torch.Tensor


def _reorder(cache: Cache, rows: torch.Tensor) -> Cache:
    return [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in cache]


@torch.no_grad()
def greedy(decoder: TokenDecoder, embedding: torch.Tensor, length: int = TOKEN_COUNT) -> Decoded:
    """The most probable token at every step, for a batch of embeddings [b, d]."""
    log_probs, cache = decoder.start(embedding)
    tokens, total = [], torch.zeros(len(embedding), device=embedding.device)
    for position in range(length):
        best, token = log_probs.max(dim=1)
        tokens.append(token)
        total = total + best
        if position + 1 < length:
            log_probs, cache = decoder.advance(token, position, cache)
    return Decoded(torch.stack(tokens, dim=1), total)


@torch.no_grad()
def beam_search(decoder: TokenDecoder, embedding: torch.Tensor, width: int = 5, length: int = TOKEN_COUNT) -> Decoded:
    """The `width` most probable sequences that beam search keeps, for one embedding [d]."""
    log_probs, cache = decoder.start(embedding[None])
    scores, tokens = log_probs[0], None
    for position in range(length):
        if position > 0:
            log_probs, cache = decoder.advance(tokens[:, -1], position - 1, cache)
            candidates = scores[:, None] + log_probs
        else:
            candidates = scores[None]
        flat = candidates.flatten()
        keep = min(width, int(torch.isfinite(flat).sum()))
        scores, index = flat.topk(keep)
        parent, token = index // candidates.shape[1], index % candidates.shape[1]
        if position == 0:
            cache = _reorder(cache, torch.zeros_like(parent))
            tokens = token[:, None]
        else:
            cache = _reorder(cache, parent)
            tokens = torch.cat([tokens[parent], token[:, None]], dim=1)
    return Decoded(tokens, scores)


@torch.no_grad()
def sample_sequences(decoder: TokenDecoder, embedding: torch.Tensor, n: int, temperature: float = 0.7,
                     length: int = TOKEN_COUNT, generator: torch.Generator | None = None) -> Decoded:
    """n sequences drawn at `temperature` for one embedding [d], each with its log-probability at
    temperature 1 (the model's own), sorted most probable first; duplicates are kept."""
    log_probs, cache = decoder.start(embedding[None].expand(n, -1))
    tokens, total = [], torch.zeros(n, device=embedding.device)
    for position in range(length):
        weights = (log_probs / temperature).softmax(dim=1)
        token = torch.multinomial(weights.cpu(), 1, generator=generator)[:, 0].to(embedding.device)
        tokens.append(token)
        total = total + log_probs.gather(1, token[:, None])[:, 0]
        if position + 1 < length:
            log_probs, cache = decoder.advance(token, position, cache)
    order = total.argsort(descending=True)
    return Decoded(torch.stack(tokens, dim=1)[order], total[order])
