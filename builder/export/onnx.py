"""The ONNX files of a bundle: optimum's export with its graph fused, an embedding guard's linear head appended,
dynamic int8 quantization, and the hashes and tokenizer the runtime needs."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from ..train.run import ModelKind, TrainingRun

__all__ = [
    "EMBEDDING_OUTPUT",
    "HEAD_NODE",
    "TOKEN_OUTPUT",
    "append_linear_head",
    "encoder_sha256",
    "export_fused_fp32",
    "quantize_int8",
    "write_plain_tokenizer",
]

logger = logging.getLogger("builder.export.onnx")

HEAD_NODE = "guard_head.MatMul"
EMBEDDING_OUTPUT = "sentence_embedding"
TOKEN_OUTPUT = "token_embeddings"


def export_fused_fp32(model_dir: Path, folder: Path, kind: ModelKind = "classifier") -> Path:
    """Export a checkpoint with optimum and fuse its graph; returns the fused fp32 ONNX file.

    ``kind="embedding"``: ``model_dir`` is a sentence-transformers folder with ``head.npz`` in it (an embedding
    guard, ``builder.train.embedding``); optimum exports its sentence embedding and the linear head is appended.
    """
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import OptimizationConfig

    if kind == "embedding":
        main_export(
            str(model_dir),
            output=folder,
            task="feature-extraction",
            library_name="sentence_transformers",
            device="cpu",
        )
        append_linear_head(folder / "model.onnx", model_dir / TrainingRun.HEAD_FILE)
    else:
        main_export(str(model_dir), output=folder, task="text-classification", device="cpu")
    # Level 2 fuses attention, GELU and LayerNorm: measured ~20 % faster after int8 than the plain export. Not the
    # residual Add into LayerNorm: ONNX Runtime's CPU SkipLayerNormalization kernel is ~5x slower than the two ops
    # (guard_sdk.bundle.create_session, which also keeps the session from re-fusing them at load).
    ORTOptimizer.from_pretrained(folder).optimize(
        OptimizationConfig(
            optimization_level=2,
            optimize_for_gpu=False,
            disable_skip_layer_norm_fusion=True,
            disable_bias_skip_layer_norm_fusion=True,
        ),
        save_dir=folder,
    )
    return folder / "model_optimized.onnx"


def append_linear_head(onnx_file: Path, head_file: Path) -> None:
    """Make the graph's outputs ``logits = sentence_embedding @ weight + bias``, the sentence embedding and the token
    embeddings."""
    import onnx
    from onnx import helper, numpy_helper

    params = np.load(head_file)
    model = onnx.load(str(onnx_file))
    graph = model.graph
    graph.initializer.extend(
        [
            numpy_helper.from_array(params["weight"].astype(np.float32), "guard_head.weight"),
            numpy_helper.from_array(params["bias"].astype(np.float32), "guard_head.bias"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("MatMul", [EMBEDDING_OUTPUT, "guard_head.weight"], ["guard_head.matmul"], name=HEAD_NODE),
            helper.make_node("Add", ["guard_head.matmul", "guard_head.bias"], ["logits"], name="guard_head.Add"),
        ]
    )
    # The logits come first (what every runtime reads); the sentence embedding second, for guards that share it;
    # the token embeddings third, for pooling each sentence of a window (guard_sdk.bundle.pool_sentences).
    outputs = {output.name: output for output in graph.output}
    del graph.output[:]
    labels = int(params["bias"].shape[0])
    graph.output.append(helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch_size", labels]))
    graph.output.extend([outputs[EMBEDDING_OUTPUT], outputs[TOKEN_OUTPUT]])
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_file))


def quantize_int8(source: Path, target: Path, *, per_channel: bool) -> None:
    """Dynamic int8 weights (activations quantized at run time), as shipped in ``model.onnx``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # DefaultTensorType: shape inference cannot type the outputs of the fused (com.microsoft) attention nodes.
    # An appended linear head stays fp32: it is tiny, and its steep logistic weights turn int8 rounding of 384
    # weights into probability jumps of 0.25 (measured on the default pack), for no speed gain.
    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        nodes_to_exclude=[HEAD_NODE],
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def encoder_sha256(onnx_file: Path) -> str:
    """sha256 of an embedding guard's graph without its head: equal for guards whose encoders compute the same."""

    import onnx

    model = onnx.load(str(onnx_file))
    graph = model.graph
    for field, head in (
        (graph.node, [n for n in graph.node if n.name.startswith("guard_head.")]),
        (graph.initializer, [i for i in graph.initializer if i.name.startswith("guard_head.")]),
        (graph.output, [o for o in graph.output if o.name != EMBEDDING_OUTPUT]),
        (graph.value_info, [v for v in graph.value_info if v.name.startswith("guard_head.")]),
    ):
        for item in head:
            field.remove(item)
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def write_plain_tokenizer(source: Path, target: Path) -> None:
    """The runtime sets truncation (windows) and padding itself; the shipped file carries neither."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(source))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    tokenizer.save(str(target))
