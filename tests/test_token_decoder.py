"""The token expert's decoder (tokens issue, groundwork): the KV cache, the strategies, and a
small model trained on a synthetic task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoloc.geo.s2cells import cell_id_to_latlon, latlon_to_cell_id
from geoloc.tokens.decoder import (
    TOKEN_COUNT,
    Neighbours,
    TokenDecoder,
    TokenDecoderConfig,
    position_weights,
    token_loss,
)
from geoloc.tokens.geotokens import cell_id_to_tokens, tokens_to_cell_id
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
    beams = beam_search(decoder, torch.randn(8), width=6 * 16, level=2)
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
    short = greedy(decoder, embeddings[:1], level=6)
    assert tuple(short.tokens[0].tolist()) == targets[0][:4]
    coarse = tokens_to_cell_id(targets[0][:4])
    assert coarse == int(latlon_to_cell_id(*PLACES[0], 6))


def test_an_odd_level_sums_out_the_last_digit_so_the_cells_probabilities_still_sum_to_one():
    decoder = untrained(4)
    beams = beam_search(decoder, torch.randn(8), width=6 * 4, level=1)  # every level-1 cell: 6 faces x 4 children
    assert len(beams.tokens) == 24 and abs(float(beams.log_probs.exp().sum()) - 1) < 1e-5
    assert torch.all(beams.tokens[:, 1] % 4 == 0)


def test_the_level_1_cell_probability_is_the_sum_over_its_level_2_children():
    decoder, embedding = untrained(5), torch.randn(8)
    level_1 = beam_search(decoder, embedding, width=24, level=1)
    level_2 = beam_search(decoder, embedding, width=96, level=2)
    children = {}
    for tokens, log_p in zip(level_2.tokens.tolist(), level_2.log_probs.exp().tolist(), strict=True):
        parent = (tokens[0], tokens[1] - tokens[1] % 4)
        children[parent] = children.get(parent, 0.0) + log_p
    for tokens, log_p in zip(level_1.tokens.tolist(), level_1.log_probs.exp().tolist(), strict=True):
        assert children[tuple(tokens)] == pytest.approx(log_p, rel=1e-5)
    odd = tokens_to_cell_id(tuple(level_1.tokens[0].tolist()), 1)
    assert odd == int(latlon_to_cell_id(*cell_id_to_latlon(np.uint64(odd)), 1))


def test_a_decoder_with_neighbour_slots_caches_like_the_full_pass_with_and_without_neighbours():
    torch.manual_seed(6)
    decoder = TokenDecoder(TokenDecoderConfig(embedding_dim=8, width=32, depth=2, heads=2, neighbours=3)).eval()
    rng = np.random.default_rng(1)
    embedding, tokens = torch.randn(2, 8), random_tokens(2, rng)
    given = Neighbours(random_tokens(6, rng).view(2, 3, TOKEN_COUNT), torch.tensor([[0.7, 0.3, 0.0], [1.0, 0.0, 0.0]]))
    for neighbours in (given, None):
        full = decoder(embedding, tokens, neighbours)
        log_probs, cache = decoder.start(embedding, neighbours)
        stepwise = [log_probs]
        for position in range(TOKEN_COUNT - 1):
            log_probs, cache = decoder.advance(tokens[:, position], position, cache)
            stepwise.append(log_probs)
        torch.testing.assert_close(torch.stack(stepwise, dim=1), full, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(decoder(embedding, tokens, given), decoder(embedding, tokens, None))


def test_a_decoder_learns_to_read_the_answer_from_its_neighbours():
    """The image says nothing here; the heaviest neighbour's cell is the place. After brief training
    the decoder copies it, and a decoder without neighbours would be at chance between the two."""
    torch.manual_seed(0)
    targets = torch.tensor([cell_id_to_tokens(int(latlon_to_cell_id(lat, lon, 20))) for lat, lon in PLACES])
    decoder = TokenDecoder(TokenDecoderConfig(embedding_dim=8, width=64, depth=2, heads=2, dropout=0.0, neighbours=2))
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=3e-3)

    def batch(n: int):
        which = torch.randint(0, 2, (n,))
        # the true place first with weight 0.8, the other one second with 0.2
        tokens = torch.stack([targets[which], targets[1 - which]], dim=1)
        return which, Neighbours(tokens, torch.tensor([[0.8, 0.2]]).expand(n, -1))

    for _ in range(300):
        which, neighbours = batch(64)
        loss = token_loss(decoder, torch.randn(64, 8), targets[which], neighbours)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    decoder.eval()
    which, neighbours = batch(32)
    decoded = greedy(decoder, torch.randn(32, 8), neighbours=neighbours)
    assert torch.equal(decoded.tokens, targets[which])
