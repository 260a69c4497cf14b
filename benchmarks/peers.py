"""The classifiers users would pick instead of a guard bundle, rebuilt offline for latency comparisons.

Latency does not depend on the weights, so each peer is its published architecture with random weights, exported
the way its users run it and fed random token ids of the target length (no tokenizer, no hub):

- ``llm-guard PromptInjection``: ProtectAI deberta-v3-base-prompt-injection-v2, run by llm-guard with
  ``use_onnx=True`` as an optimum fp32 ONNX export in ONNX Runtime.
- ``Prompt Guard 2 22M``: Meta's Llama-Prompt-Guard-2-22M, a DeBERTa-v3-xsmall, published as a transformers
  checkpoint (timed in torch eager) and, to be generous to it, also as an optimum fp32 ONNX export.

    python -m benchmarks.peers            # build (cached under .cache/benchmarks/peers) and print the ONNX files
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._common import CACHE, log

__all__ = ["PEERS", "Peer", "peer_onnx", "peer_torch_model", "random_feeds"]


# Shared by DeBERTa-v3 base and xsmall (microsoft/deberta-v3-* config.json).
_DEBERTA_V3: dict[str, Any] = {
    "vocab_size": 128100,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 0,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-7,
    "relative_attention": True,
    "max_relative_positions": -1,
    "position_buckets": 256,
    "norm_rel_ebd": "layer_norm",
    "share_att_key": True,
    "pos_att_type": ["p2c", "c2p"],
    "position_biased_input": False,
    "pad_token_id": 0,
    "num_labels": 2,
}


@dataclass(frozen=True)
class Peer:
    key: str
    name: str
    architecture: str
    config: dict[str, Any]

    @property
    def max_tokens(self) -> int:
        return int(self.config["max_position_embeddings"])


PEERS = {
    "llm-guard": Peer(
        "llm-guard",
        "llm-guard PromptInjection (ONNX fp32)",
        "DeBERTa-v3-base, 184M",
        {
            **_DEBERTA_V3,
            "num_hidden_layers": 12,
            "hidden_size": 768,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "pooler_hidden_size": 768,
        },
    ),
    "prompt-guard-2": Peer(
        "prompt-guard-2",
        "Prompt Guard 2 22M",
        "DeBERTa-v3-xsmall, 22M (+ 49M embeddings)",
        {
            **_DEBERTA_V3,
            "num_hidden_layers": 12,
            "hidden_size": 384,
            "num_attention_heads": 6,
            "intermediate_size": 1536,
            "pooler_hidden_size": 384,
        },
    ),
}


def peer_torch_model(peer: Peer):
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    torch.manual_seed(0)
    return DebertaV2ForSequenceClassification(DebertaV2Config(**peer.config)).eval()


def peer_onnx(peer: Peer, cache: Path = CACHE / "peers") -> Path:
    """The peer exported by optimum to fp32 ONNX (built once, then cached)."""
    folder = cache / peer.key
    model_file = folder / "model.onnx"
    if model_file.is_file():
        return model_file
    from optimum.exporters.onnx import onnx_export_from_model

    log(f"exporting {peer.name} ({peer.architecture}, random weights) with optimum to {folder} ...")
    partial = folder.with_name(folder.name + ".partial")
    onnx_export_from_model(peer_torch_model(peer), output=partial, task="text-classification", device="cpu")
    partial.rename(folder)
    return model_file


def random_feeds(input_names: list[str], tokens: int, seed: int = 0) -> dict[str, Any]:
    """Token ids of exactly ``tokens`` tokens ([CLS] ... [SEP]) as a DeBERTa-v3 tokenizer would produce them."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 128000, size=(1, tokens), dtype=np.int64)
    ids[0, 0], ids[0, -1] = 1, 2
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return {name: feeds[name] for name in input_names}


if __name__ == "__main__":
    for peer in PEERS.values():
        print(peer.name, peer_onnx(peer))
