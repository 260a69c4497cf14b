"""builder: from a policy or labeled data to a guard bundle.

Each stage is a module with typed inputs and outputs that can be run and inspected alone:

    policy, dimensions, generate, verify, curate, pipeline   policy YAML -> debate-verified dataset (data engine)
    dataset    labeled JSONL -> LabeledDataset
    train      LabeledDataset -> fine-tuned classifier checkpoint (safetensors) + validation split
    embedding  LabeledDataset -> sentence embedding + linear head per label (the embedding guard)
    multitask  many policies -> one model reading (instruction, text) pairs; new policies zero-shot by instruction
    merge      single-policy runs -> one multi-label run (searched linear / task-arithmetic / TIES encoder merge)
    export     either run -> ONNX fp32 -> int8 -> parity gate -> calibrated thresholds -> guard bundle
    pack       shared/train seed sets -> the default content-safety and prompt-injection bundles
    adversarial  training JSONL + policy -> rounds of bandit-chosen, debate-verified hard examples, retrained each round

Needs the ``builder`` extra (torch, transformers, optimum-onnx); the runtime, ``guard_sdk``, never imports it.
"""

__version__ = "0.1.0"
