"""Decoding strategies over the token decoder: greedy, beam search, and sampling with selection.

Each returns whole token sequences with their log-probabilities under the model. Decoding to a
level below 20 stops early: level L takes 1 + ceil(L/2) tokens. For an odd level the last token's
second digit is summed out (its 16 values fold into 4, at 4·d), so the sequence's probability is
exactly that of the level-L cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from geoloc.tokens.decoder import TOKEN_COUNT, Cache, Neighbours, TokenDecoder

MAX_LEVEL = 2 * (TOKEN_COUNT - 1)


@dataclass(frozen=True)
class Decoded:
    """Sequences [n, length] with their log-probabilities [n], most probable first."""

    tokens: torch.Tensor
    log_probs: torch.Tensor


def token_count(level: int) -> int:
    """Tokens that name a cell of `level` (0..20)."""
    if not 0 <= level <= MAX_LEVEL:
        raise ValueError(f"level must be in [0, {MAX_LEVEL}], got {level}")
    return 1 + (level + 1) // 2


def _step_log_probs(log_probs: torch.Tensor, position: int, level: int) -> torch.Tensor:
    """The distribution to choose token `position` from: the model's, or its first-digit marginal
    when this is the last token of an odd level."""
    if level % 2 == 0 or position != token_count(level) - 1:
        return log_probs
    first_digit = log_probs.view(len(log_probs), 4, 4).logsumexp(dim=2)  # token = 4·first + second
    folded = torch.full_like(log_probs, -torch.inf)
    folded[:, ::4] = first_digit
    return folded


def _reorder(cache: Cache, rows: torch.Tensor) -> Cache:
    return [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in cache]


@torch.no_grad()
def greedy(
    decoder: TokenDecoder, embedding: torch.Tensor, level: int = MAX_LEVEL, neighbours: Neighbours | None = None
) -> Decoded:
    """The most probable token at every step, for a batch of embeddings [b, d]."""
    log_probs, cache = decoder.start(embedding, neighbours)
    tokens, total, length = [], torch.zeros(len(embedding), device=embedding.device), token_count(level)
    for position in range(length):
        best, token = _step_log_probs(log_probs, position, level).max(dim=1)
        tokens.append(token)
        total = total + best
        if position + 1 < length:
            log_probs, cache = decoder.advance(token, position, cache)
    return Decoded(torch.stack(tokens, dim=1), total)


@torch.no_grad()
def beam_search(
    decoder: TokenDecoder,
    embedding: torch.Tensor,
    width: int = 5,
    level: int = MAX_LEVEL,
    neighbours: Neighbours | None = None,
) -> Decoded:
    """The `width` most probable sequences that beam search keeps, for one embedding [d]
    (and its neighbours, a batch of one)."""
    return beam_search_batch(decoder, embedding[None], width, level, neighbours)[0]


@torch.no_grad()
def beam_search_batch(
    decoder: TokenDecoder,
    embeddings: torch.Tensor,
    width: int = 5,
    level: int = MAX_LEVEL,
    neighbours: Neighbours | None = None,
) -> list[Decoded]:
    """Beam search for each of a batch of embeddings [b, d] (and their neighbours, a batch of b),
    every step one forward pass for all their beams; each photo's beams are its own."""
    b, device = len(embeddings), embeddings.device
    log_probs, cache = decoder.start(embeddings, neighbours)
    scores = torch.zeros(b, 1, device=device)
    tokens = torch.zeros(b, 1, 0, dtype=torch.long, device=device)
    photo = torch.arange(b, device=device)[:, None]
    for position in range(token_count(level)):
        if position > 0:
            log_probs, cache = decoder.advance(tokens[:, :, -1].flatten(), position - 1, cache)
        step = _step_log_probs(log_probs, position, level)
        candidates = (scores[:, :, None] + step.view(b, scores.shape[1], -1)).flatten(1)  # [b, beams × tokens]
        keep = min(width, int(torch.isfinite(candidates).sum(1).min()))
        scores, index = candidates.topk(keep, dim=1)
        parent, token = index // step.shape[1], index % step.shape[1]
        cache = _reorder(cache, (photo * tokens.shape[1] + parent).flatten())
        kept = tokens.gather(1, parent[:, :, None].expand(-1, -1, tokens.shape[2]))
        tokens = torch.cat([kept, token[:, :, None]], dim=2)
    return [Decoded(tokens[i], scores[i]) for i in range(b)]


@torch.no_grad()
def sample_sequences(
    decoder: TokenDecoder,
    embedding: torch.Tensor,
    n: int,
    temperature: float = 0.7,
    level: int = MAX_LEVEL,
    generator: torch.Generator | None = None,
    neighbours: Neighbours | None = None,
) -> Decoded:
    """n sequences drawn at `temperature` for one embedding [d], each with its log-probability at
    temperature 1 (the model's own), sorted most probable first; duplicates are kept.

    The draws use `generator` on the CPU, so a seed gives the same sequences on any device."""
    log_probs, cache = decoder.start(
        embedding[None].expand(n, -1), None if neighbours is None else neighbours.repeat(n)
    )
    tokens, total, length = [], torch.zeros(n, device=embedding.device), token_count(level)
    for position in range(length):
        step = _step_log_probs(log_probs, position, level)
        token = torch.multinomial((step / temperature).softmax(dim=1).cpu(), 1, generator=generator)[:, 0]
        token = token.to(embedding.device)
        tokens.append(token)
        total = total + step.gather(1, token[:, None])[:, 0]
        if position + 1 < length:
            log_probs, cache = decoder.advance(token, position, cache)
    order = total.argsort(descending=True, stable=True)
    return Decoded(torch.stack(tokens, dim=1)[order], total[order])
