"""GeoToken's decoder: an autoregressive transformer over a place's S2 tokens, conditioned on the photo.

The sequence is [condition, n₁ … n_k, t₀, t₁, …, t₉]. The condition slot holds the projected image
feature; the optional neighbour slots hold k retrieved places (GeoToken conditions on the gallery's
top points), each embedded from its own tokens, its share of the neighbours' weight and its rank.
The last prefix slot predicts token 0 and token slot i predicts token i+1 (the face, then ten pairs
of Hilbert digits). Each position has its own vocabulary (6 faces, then 16 digit pairs): inputs use
one embedding table per position, and outputs beyond a position's vocabulary are masked.

Attention is causal, and decoding carries a key/value cache, so each step runs the network on the
new token only. A decoder built for k neighbours also runs without them: absent slots hold a learnt
"no neighbour" vector, and training drops whole neighbour sets so that the model learns both cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

TOKEN_COUNT = 11  # face + 10 pairs of Hilbert digits: a level-20 cell
VOCABULARIES = (6,) + (16,) * (TOKEN_COUNT - 1)
MAX_VOCABULARY = max(VOCABULARIES)
FIRST_WEIGHT, LAST_WEIGHT = 2.0, 1.0  # the loss weighs coarse tokens more


@dataclass(frozen=True)
class TokenDecoderConfig:
    embedding_dim: int
    width: int = 256
    depth: int = 4
    heads: int = 4
    dropout: float = 0.1
    neighbours: int = 0  # retrieved places attended to; 0: the image alone


@dataclass(frozen=True)
class Neighbours:
    """Retrieved places for a batch: their tokens [b, k, 11] and weights [b, k], heaviest first.

    Weights are shares of the neighbours' total (they sum to 1 per row); 0 marks an absent slot.
    """

    tokens: torch.Tensor
    weights: torch.Tensor

    def to(self, device: torch.device | str) -> Neighbours:
        return Neighbours(self.tokens.to(device), self.weights.to(device))

    def rows(self, index: torch.Tensor) -> Neighbours:
        return Neighbours(self.tokens[index], self.weights[index])

    def repeat(self, n: int) -> Neighbours:
        """One row's neighbours repeated n times (for n samples or beams of one photo)."""
        return Neighbours(self.tokens.expand(n, -1, -1), self.weights.expand(n, -1))


class NeighbourEncoder(nn.Module):
    """One vector per neighbour slot: the sum of its token embeddings, its weight and its rank."""

    def __init__(self, config: TokenDecoderConfig):
        super().__init__()
        self.count = config.neighbours
        self.tokens = nn.ModuleList(nn.Embedding(v, config.width) for v in VOCABULARIES)
        self.weight = nn.Linear(2, config.width)
        self.rank = nn.Parameter(torch.zeros(config.neighbours, config.width))
        self.absent = nn.Parameter(torch.zeros(config.width))
        nn.init.normal_(self.rank, std=0.02)
        nn.init.normal_(self.absent, std=0.02)

    def forward(self, neighbours: Neighbours | None, batch: int) -> torch.Tensor:
        """[batch, k, width]; every slot absent when `neighbours` is None."""
        if neighbours is None:
            return (self.absent + self.rank).expand(batch, -1, -1)
        tokens, weights = neighbours.tokens, neighbours.weights.float()
        if tokens.shape[1:] != (self.count, TOKEN_COUNT) or weights.shape[1:] != (self.count,):
            raise ValueError(
                f"neighbours must be [b, {self.count}, {TOKEN_COUNT}] tokens and [b, {self.count}] weights"
            )
        places = sum(table(tokens[..., i]) for i, table in enumerate(self.tokens))
        # log(weight) separates a dominant neighbour from a crowd of equals better than the weight alone.
        weight_features = torch.stack([weights, weights.clamp_min(1e-6).log() / 10], dim=-1)
        present = (weights > 0)[..., None]
        return torch.where(present, places + self.weight(weight_features), self.absent) + self.rank


Cache = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys and values [batch, heads, length, head_dim]


class CausalBlock(nn.Module):
    """Pre-norm self-attention and MLP; attends to the cached keys and values of earlier slots."""

    def __init__(self, config: TokenDecoderConfig):
        super().__init__()
        self.heads = config.heads
        self.norm1, self.norm2 = nn.LayerNorm(config.width), nn.LayerNorm(config.width)
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.proj = nn.Linear(config.width, config.width)
        self.mlp = nn.Sequential(
            nn.Linear(config.width, 4 * config.width), nn.GELU(), nn.Linear(4 * config.width, config.width)
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, h: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None):
        batch, length, width = h.shape
        q, k, v = (
            x.view(batch, length, self.heads, -1).transpose(1, 2) for x in self.qkv(self.norm1(h)).chunk(3, dim=-1)
        )
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        # New slots sit at the end of the sequence: each sees every cached slot and the new ones before it.
        offset = k.shape[2] - length
        allowed = torch.ones(length, k.shape[2], dtype=torch.bool, device=h.device).tril(diagonal=offset)
        attended = nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout.p if self.training else 0.0
        )
        h = h + self.dropout(self.proj(attended.transpose(1, 2).reshape(batch, length, width)))
        h = h + self.dropout(self.mlp(self.norm2(h)))
        return h, (k, v)


class TokenDecoder(nn.Module):
    def __init__(self, config: TokenDecoderConfig):
        super().__init__()
        self.config = config
        self.condition = nn.Sequential(
            nn.Linear(config.embedding_dim, config.width), nn.GELU(), nn.Linear(config.width, config.width)
        )
        self.token_embeddings = nn.ModuleList(nn.Embedding(v, config.width) for v in VOCABULARIES[:-1])
        self.neighbours = NeighbourEncoder(config) if config.neighbours else None
        self.prefix = 1 + config.neighbours  # slots before the first token
        self.slot_embedding = nn.Parameter(torch.zeros(self.prefix + TOKEN_COUNT - 1, config.width))
        nn.init.normal_(self.slot_embedding, std=0.02)
        self.blocks = nn.ModuleList(CausalBlock(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.width)
        self.out = nn.Linear(config.width, MAX_VOCABULARY)
        mask = torch.full((TOKEN_COUNT, MAX_VOCABULARY), -math.inf)
        for position, size in enumerate(VOCABULARIES):
            mask[position, :size] = 0.0
        self.register_buffer("vocabulary_mask", mask)

    def _run(self, h: torch.Tensor, first_slot: int, cache: Cache | None) -> tuple[torch.Tensor, Cache]:
        """Hidden states of slots first_slot.. and the grown cache."""
        h = h + self.slot_embedding[first_slot : first_slot + h.shape[1]]
        grown = []
        for layer, block in enumerate(self.blocks):
            h, kv = block(h, None if cache is None else cache[layer])
            grown.append(kv)
        return h, grown

    def _predict(self, h: torch.Tensor, first_token: int) -> torch.Tensor:
        """Log-probabilities [batch, slots, 16] of tokens first_token.. from the hidden states predicting them."""
        logits = self.out(self.norm(h)) + self.vocabulary_mask[first_token : first_token + h.shape[1]]
        return logits.log_softmax(dim=-1)

    def _prefix(self, embedding: torch.Tensor, neighbours: Neighbours | None) -> torch.Tensor:
        slots = [self.condition(embedding)[:, None]]
        if self.neighbours is not None:
            slots.append(self.neighbours(neighbours, len(embedding)))
        elif neighbours is not None:
            raise ValueError("this decoder was trained without neighbours")
        return torch.cat(slots, dim=1)

    def forward(
        self, embedding: torch.Tensor, tokens: torch.Tensor, neighbours: Neighbours | None = None
    ) -> torch.Tensor:
        """Teacher forcing: log-probabilities [batch, 11, 16] of every token given the true ones before it."""
        inputs = [self._prefix(embedding, neighbours)]
        inputs += [self.token_embeddings[i](tokens[:, i])[:, None] for i in range(TOKEN_COUNT - 1)]
        h, _ = self._run(torch.cat(inputs, dim=1), 0, None)
        return self._predict(h[:, self.prefix - 1 :], 0)

    def start(self, embedding: torch.Tensor, neighbours: Neighbours | None = None) -> tuple[torch.Tensor, Cache]:
        """Log-probabilities [batch, 16] of the face token, and the cache to continue from."""
        h, cache = self._run(self._prefix(embedding, neighbours), 0, None)
        return self._predict(h[:, -1:], 0)[:, 0], cache

    def advance(self, token: torch.Tensor, position: int, cache: Cache) -> tuple[torch.Tensor, Cache]:
        """Feeds token number `position` [batch]; returns log-probabilities [batch, 16] of the next one.

        Only the new slot runs through the network; earlier slots come from the cache.
        """
        h = self.token_embeddings[position](token)[:, None]
        h, cache = self._run(h, self.prefix + position, cache)
        return self._predict(h, position + 1)[:, 0], cache


def position_weights(count: int = TOKEN_COUNT) -> torch.Tensor:
    """Loss weight per token position: linear from 2.0 on the face token to 1.0 on the last."""
    return torch.linspace(FIRST_WEIGHT, LAST_WEIGHT, count)


def token_loss(
    decoder: TokenDecoder, embedding: torch.Tensor, tokens: torch.Tensor, neighbours: Neighbours | None = None
) -> torch.Tensor:
    """Position-weighted cross-entropy of the true tokens [batch, 11], averaged over the batch."""
    log_probs = decoder(embedding, tokens, neighbours)
    picked = log_probs.gather(2, tokens[..., None])[..., 0]  # [batch, 11]
    weights = position_weights().to(picked.device)
    return -(picked * weights).sum(dim=1).mean() / weights.sum()
