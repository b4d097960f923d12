"""The token expert's decoder (tokens issue, groundwork): the KV cache, the strategies, and a
small model trained on a synthetic task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoloc.common.geodesy import cell_id_to_tokens, latlon_to_cell_id, tokens_to_cell_id
from geoloc.tokens.decoder import TOKEN_COUNT, TokenDecoder, TokenDecoderConfig, position_weights, token_loss
from geoloc.tokens.search import beam_search, greedy, sample_sequences

PLACES = [(48.8584, 2.2945), (35.6586, 139.7454)]  # one level-20 cell per condition


def untrained(seed: int = 0) -> TokenDecoder:
    torch.manual_seed(seed)
    return TokenDecoder(TokenDecoderConfig(embedding_dim=8, width=32, depth=2, heads=2)).eval()


def random_tokens(n: int, rng: np.random.Generator) -> torch.Tensor:
    return torch.tensor(np.concatenate([rng.integers(0, 6, (n, 1)), rng.integers(0, 16, (n, TOKEN_COUNT - 1))], axis=1))


def test_cached_steps_equal_the_full_teacher_forced_pass():
    decoder, rng = untrained(), np.random.default_rng(0)
    embedding, tokens = torch.randn(4, 8), random_tokens(4, rng)
    full = decoder(embedding, tokens)
    log_probs, cache = decoder.start(embedding)
    stepwise = [log_probs]
    for position in range(TOKEN_COUNT - 1):
        log_probs, cache = decoder.advance(tokens[:, position], position, cache)
        stepwise.append(log_probs)
    torch.testing.assert_close(torch.stack(stepwise, dim=1), full, atol=1e-5, rtol=1e-5)
    assert torch.isinf(full[:, 0, 6:]).all() and torch.isfinite(full[:, 1:]).all()


def test_beam_of_width_one_is_greedy():
    decoder = untrained(1)
    for embedding in torch.randn(5, 8):
        g, b = greedy(decoder, embedding[None]), beam_search(decoder, embedding, width=1)
        assert torch.equal(g.tokens, b.tokens)
        torch.testing.assert_close(g.log_probs, b.log_probs)


def test_beam_probabilities_are_sorted_and_sum_to_at_most_one():
    decoder = untrained(2)
    beams = beam_search(decoder, torch.randn(8), width=5)
    p = beams.log_probs.exp()
    assert len(p) == 5 and torch.all(p[1:] <= p[:-1]) and p.sum() <= 1
    assert len({tuple(t) for t in beams.tokens.tolist()}) == 5


def test_a_beam_as_wide_as_every_two_token_sequence_holds_all_the_mass():
    decoder = untrained(3)
    beams = beam_search(decoder, torch.randn(8), width=6 * 16, length=2)
    assert len(beams.tokens) == 96 and abs(float(beams.log_probs.exp().sum()) - 1) < 1e-5


def test_the_loss_weighs_the_face_token_twice_the_last():
    weights = position_weights()
    assert weights[0] == 2.0 and weights[-1] == 1.0 and torch.all(weights[1:] < weights[:-1])


@pytest.fixture(scope="module")
def trained() -> tuple[TokenDecoder, torch.Tensor, list[tuple[int, ...]]]:
    """300 steps on two conditions, each meaning one level-20 cell."""
    torch.manual_seed(0)
    targets = [cell_id_to_tokens(int(latlon_to_cell_id(lat, lon, 20))) for lat, lon in PLACES]
    embeddings = torch.eye(2, 8) * 3
    decoder = TokenDecoder(TokenDecoderConfig(embedding_dim=8, width=64, depth=2, heads=2, dropout=0.0))
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=3e-3)
    tokens = torch.tensor(targets)
    for _ in range(300):
        which = torch.randint(0, 2, (64,))
        loss = token_loss(decoder, embeddings[which], tokens[which])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return decoder.eval(), embeddings, targets


def test_a_briefly_trained_decoder_decodes_each_conditions_cell(trained):
    decoder, embeddings, targets = trained
    decoded = greedy(decoder, embeddings)
    assert [tuple(t) for t in decoded.tokens.tolist()] == targets
    for embedding, target in zip(embeddings, targets, strict=True):
        beams = beam_search(decoder, embedding, width=5)
        assert tuple(beams.tokens[0].tolist()) == target and beams.log_probs[0].exp() > 0.9
        drawn = sample_sequences(decoder, embedding, 30, generator=torch.Generator().manual_seed(0))
        assert tuple(drawn.tokens[0].tolist()) == target
        assert tokens_to_cell_id(target) == tokens_to_cell_id(tuple(beams.tokens[0].tolist()))


def test_a_short_decode_is_the_coarser_cell(trained):
    decoder, embeddings, targets = trained
    short = greedy(decoder, embeddings[:1], length=4)
    assert tuple(short.tokens[0].tolist()) == targets[0][:4]
    coarse = tokens_to_cell_id(targets[0][:4])
    assert coarse == int(latlon_to_cell_id(*PLACES[0], 6))
