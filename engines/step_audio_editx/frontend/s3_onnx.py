"""Weights of the official ``speech_tokenizer_v1.onnx`` as an ``S3Tokenizer`` state dict (read once, then cached).

The ONNX graph is only read, never run: each node's weight inputs (initializers) are renamed to the torch
parameter they are. The naming scheme of the exported graph:

* the convolutions and the position table are initializers with fixed names (below);
* a block's LayerNorm is a ``LayerNormalization`` node ``/blocks.N/attn_ln/LayerNormalization`` whose
  inputs 1 and 2 are its weight and bias;
* a block's linear layer is a ``MatMul`` node (``/blocks.N/attn/query/MatMul``) holding the transposed
  weight and an ``Add`` node holding the bias (``Mul`` / ``Add_1`` in some exports); ``/mlp/mlp.K/`` is
  ``mlp.K``;
* the codebook is the (transposed) input of ``/quantizer/rq/model/layers.0/_codebook/Pow_1``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

FIXED_NAMES: dict[str, str] = {  # initializer name -> parameter (the 25 Hz and 50 Hz v1 exports)
    **dict.fromkeys(("encoders.conv1.weight", "onnx::Conv_1519"), "encoder.conv1.weight"),
    **dict.fromkeys(("encoders.conv1.bias", "onnx::Conv_1520"), "encoder.conv1.bias"),
    **dict.fromkeys(("encoders.conv2.weight", "onnx::Conv_1521"), "encoder.conv2.weight"),
    **dict.fromkeys(("encoders.conv2.bias", "onnx::Conv_1522"), "encoder.conv2.bias"),
    "encoders.positional_embedding": "encoder.positional_embedding",
}
CODEBOOK_NODE = "/quantizer/rq/model/layers.0/_codebook/Pow_1"
LAYER_NORM_OP = "LayerNormalization"
WEIGHT_OPS = {"MatMul": "weight", "Mul": "weight", "Add": "bias", "Add_1": "bias"}  # last node-name part -> field


def _block_parameter(node_name: str, field: str | None = None) -> str | None:
    """``/blocks.0/mlp/mlp.2/MatMul`` -> ``encoder.blocks.0.mlp.2.weight`` (None for anything else)."""
    parts = node_name.strip("/").split("/")
    if not parts or not parts[0].startswith("blocks."):
        return None
    field = field or WEIGHT_OPS.get(parts[-1])
    if field is None:
        return None
    path = [p for p in parts[:-1] if p != "mlp"] if len(parts) > 2 and parts[1] == "mlp" else parts[:-1]
    return "encoder." + ".".join(path) + "." + field


def _tensor(initializer, transpose: bool) -> torch.Tensor:
    from onnx import numpy_helper

    array = np.array(numpy_helper.to_array(initializer), copy=True)
    return torch.from_numpy(np.ascontiguousarray(array.T) if transpose and array.ndim == 2 else array)


def onnx_state_dict(onnx_path: str | Path) -> dict[str, torch.Tensor]:
    """The tokenizer's parameters by torch name (ValueError-free; unknown initializers are ignored and a
    missing one shows up when the state dict is loaded strictly)."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    initializers = {init.name: init for init in graph.initializer}
    state: dict[str, torch.Tensor] = {}
    for node in graph.node:
        weights = [name for name in node.input if name in initializers]
        if not weights:
            continue
        if node.op_type == LAYER_NORM_OP:
            base = node.name.replace("/" + LAYER_NORM_OP, "")
            for index, field in ((1, "weight"), (2, "bias")):
                key = _block_parameter(base + "/x", field)
                if key is not None and len(node.input) > index and node.input[index] in initializers:
                    state[key] = _tensor(initializers[node.input[index]], transpose=False)
            continue
        for name in weights:
            if name in FIXED_NAMES:
                state[FIXED_NAMES[name]] = _tensor(initializers[name], transpose=False)
            elif node.name == CODEBOOK_NODE:
                state["quantizer._codebook.embed"] = _tensor(initializers[name], transpose=True)
            else:
                key = _block_parameter(node.name)
                if key is not None:
                    state[key] = _tensor(initializers[name], transpose=True)
    return state
