"""Tokenisation in the worker, so engines only see INT64 tensors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from worker.repository import ModelInfo


@dataclass
class TextTokenizer:
    """A fast tokenizer padding each batch to its longest text, truncated to max_seq_length."""

    tokenizer: Tokenizer

    @classmethod
    def for_model(cls, info: ModelInfo) -> TextTokenizer:
        """Load `REPO/<label>/tokenizer/tokenizer.json` with the model's max sequence length."""
        tok = Tokenizer.from_file(str(info.tokenizer_path))
        tok.enable_truncation(max_length=info.max_seq_length)
        pad_token = "[PAD]"
        pad_id = tok.token_to_id(pad_token)
        if pad_id is None:
            pad_id, pad_token = 0, tok.id_to_token(0) or "[PAD]"
        tok.enable_padding(pad_id=pad_id, pad_token=pad_token)
        return cls(tok)

    def __call__(self, texts: list[str]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """`input_ids` and `attention_mask`, both INT64 `[len(texts), seq]`."""
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, mask
