"""builder: from a policy or labeled data to a guard bundle.

Each stage is a module with typed inputs and outputs that can be run and inspected alone:

    dataset  labeled JSONL -> LabeledDataset
    train    LabeledDataset -> fine-tuned checkpoint (safetensors) + validation split
    export   checkpoint -> ONNX fp32 -> int8 -> parity gate -> calibrated thresholds -> guard bundle

Needs the ``builder`` extra (torch, transformers, optimum-onnx); the runtime, ``guard_sdk``, never imports it.
"""

__version__ = "0.1.0"
