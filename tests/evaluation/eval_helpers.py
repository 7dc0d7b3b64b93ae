"""Helpers of the evaluation tests: a character tokenizer for the tiny random models."""

from __future__ import annotations


class CharTokenizer:
    """Maps each character to an id in ``[3, vocab)`` (0 = pad, 1 = BOS, 2 = EOS), like the tiny models' config."""

    bos_token_id = 1
    eos_token_id = 2
    pad_token_id = 0

    def __init__(self, vocab: int = 128):
        self.vocab = vocab

    def encode(self, text: str) -> list[int]:
        return [3 + ord(ch) % (self.vocab - 3) for ch in text]

    def __call__(self, text: str, add_special_tokens: bool = True, verbose: bool = True, return_tensors=None):
        ids = self.encode(text)
        if add_special_tokens:
            ids = [self.bos_token_id, *ids]
        if return_tensors == "pt":
            import torch

            return {"input_ids": torch.tensor([ids])}
        return {"input_ids": ids}
