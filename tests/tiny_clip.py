"""A tiny, randomly initialised CLIP (both towers, with a byte-level tokenizer) saved as a Hugging
Face directory: what clip_vit_l14 and clip_vit_l14_text load, at ViT-L/14's input size and
projection width, built in a second with no download."""

from __future__ import annotations

from pathlib import Path

# GPT-2's byte-level alphabet, which CLIP's BPE uses: the printable bytes stand for themselves and
# the others are shifted past 255, so that every byte has a visible character.
PRINTABLE_BYTES = [*range(33, 127), *range(161, 173), *range(174, 256)]
MERGES = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>"), ("o", "n</w>")]


def tiny_tokenizer():
    """A CLIPTokenizer over single bytes (and a few merges): any text tokenises, about one token a letter."""
    from transformers import CLIPTokenizer

    alphabet = [chr(b) for b in PRINTABLE_BYTES] + [chr(256 + i) for i in range(256 - len(PRINTABLE_BYTES))]
    symbols = [*alphabet, *(c + "</w>" for c in alphabet), *(a + b for a, b in MERGES)]
    vocab = {s: i for i, s in enumerate([*symbols, "<|startoftext|>", "<|endoftext|>"])}
    return CLIPTokenizer(vocab=vocab, merges=MERGES)


def tiny_clip_checkpoint(directory: Path, projection_dim: int = 768) -> None:
    """A CLIPModel with two-layer towers of width 32, 224 px images and a 77-token context."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    tokenizer = tiny_tokenizer()
    ends = tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"])
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            **tower,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 77,
            "bos_token_id": ends[0],
            "eos_token_id": ends[1],
            "pad_token_id": ends[1],
            "projection_dim": projection_dim,
        },
        vision_config={**tower, "image_size": 224, "patch_size": 32, "projection_dim": projection_dim},
        projection_dim=projection_dim,
    )
    CLIPModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
