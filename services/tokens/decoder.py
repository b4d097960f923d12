"""GeoToken's decoder: an autoregressive transformer over a place's S2 tokens, conditioned on the photo.

The sequence is [condition, t₀, t₁, …, t₉]: the condition slot holds the projected image feature,
and the output at slot i predicts token i (the face, then ten pairs of Hilbert digits). Each
position has its own vocabulary (6 faces, then 16 digit pairs): inputs use one embedding table
per position, and outputs beyond a position's vocabulary are masked. Attention is causal, and
decoding carries a key/value cache, so each step runs the network on the new token only.
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


Cache = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys and values [batch, heads, length, head_dim]


class CausalBlock(nn.Module):
    """Pre-norm self-attention and MLP; attends to the cached keys and values of earlier slots."""

    def __init__(self, config: TokenDecoderConfig):
        super().__init__()
        self.heads = config.heads
        self.norm1, self.norm2 = nn.LayerNorm(config.width), nn.LayerNorm(config.width)
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.proj = nn.Linear(config.width, config.width)
        self.mlp = nn.Sequential(nn.Linear(config.width, 4 * config.width), nn.GELU(), nn.Linear(4 * config.width, config.width))
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, h: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None):
        batch, length, width = h.shape
        q, k, v = (x.view(batch, length, self.heads, -1).transpose(1, 2) for x in self.qkv(self.norm1(h)).chunk(3, dim=-1))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        # New slots sit at the end of the sequence: each sees every cached slot and the new ones before it.
        offset = k.shape[2] - length
        allowed = torch.ones(length, k.shape[2], dtype=torch.bool, device=h.device).tril(diagonal=offset)
        attended = nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout.p if self.training else 0.0)
        h = h + self.dropout(self.proj(attended.transpose(1, 2).reshape(batch, length, width)))
        h = h + self.dropout(self.mlp(self.norm2(h)))
        return h, (k, v)


class TokenDecoder(nn.Module):
    def __init__(self, config: TokenDecoderConfig):
        super().__init__()
        self.config = config
        self.condition = nn.Sequential(nn.Linear(config.embedding_dim, config.width), nn.GELU(),
                                       nn.Linear(config.width, config.width))
        self.token_embeddings = nn.ModuleList(nn.Embedding(v, config.width) for v in VOCABULARIES[:-1])
        self.slot_embedding = nn.Parameter(torch.zeros(TOKEN_COUNT, config.width))
        nn.init.normal_(self.slot_embedding, std=0.02)
        self.blocks = nn.ModuleList(CausalBlock(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.width)
        self.out = nn.Linear(config.width, MAX_VOCABULARY)
        mask = torch.full((TOKEN_COUNT, MAX_VOCABULARY), -math.inf)
        for position, size in enumerate(VOCABULARIES):
            mask[position, :size] = 0.0
        self.register_buffer("vocabulary_mask", mask)

    def _run(self, h: torch.Tensor, first_slot: int, cache: Cache | None) -> tuple[torch.Tensor, Cache]:
        """Log-probabilities [batch, slots, 16] of the tokens that slots first_slot.. predict, and the grown cache."""
        h = h + self.slot_embedding[first_slot:first_slot + h.shape[1]]
        grown = []
        for layer, block in enumerate(self.blocks):
            h, kv = block(h, None if cache is None else cache[layer])
            grown.append(kv)
        logits = self.out(self.norm(h)) + self.vocabulary_mask[first_slot:first_slot + h.shape[1]]
        return logits.log_softmax(dim=-1), grown

    def forward(self, embedding: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: log-probabilities [batch, 11, 16] of every token given the true ones before it."""
        inputs = [self.condition(embedding)[:, None]]
        inputs += [self.token_embeddings[i](tokens[:, i])[:, None] for i in range(TOKEN_COUNT - 1)]
        return self._run(torch.cat(inputs, dim=1), 0, None)[0]

    def start(self, embedding: torch.Tensor) -> tuple[torch.Tensor, Cache]:
        """Log-probabilities [batch, 16] of the face token, and the cache to continue from."""
        log_probs, cache = self._run(self.condition(embedding)[:, None], 0, None)
        return log_probs[:, 0], cache

    def advance(self, token: torch.Tensor, position: int, cache: Cache) -> tuple[torch.Tensor, Cache]:
        """Feeds token number `position` [batch]; returns log-probabilities [batch, 16] of the next one.

        Only the new slot runs through the network; earlier slots come from the cache.
        """
        h = self.token_embeddings[position](token)[:, None]
        log_probs, cache = self._run(h, position + 1, cache)
        return log_probs[:, 0], cache


def position_weights(count: int = TOKEN_COUNT) -> torch.Tensor:
    """Loss weight per token position: linear from 2.0 on the face token to 1.0 on the last."""
    return torch.linspace(FIRST_WEIGHT, LAST_WEIGHT, count)


def token_loss(decoder: TokenDecoder, embedding: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Position-weighted cross-entropy of the true tokens [batch, 11], averaged over the batch."""
    log_probs = decoder(embedding, tokens)
    picked = log_probs.gather(2, tokens[..., None])[..., 0]  # [batch, 11]
    weights = position_weights().to(picked.device)
    return -(picked * weights).sum(dim=1).mean() / weights.sum()
