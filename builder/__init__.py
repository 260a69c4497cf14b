"""builder: from a policy or labeled data to a guard bundle. The subpackages follow the flow:

    data/      policy YAML -> dimensions -> candidates -> debate-verified labels -> curated dataset (the data engine),
               and labeled JSONL of your own -> LabeledDataset
    train/     LabeledDataset -> a training run: fine-tuned classifier, embedding guard, multi-task model, merged
               runs, or a distilled encoder to train them on
    export/    training run -> ONNX fp32 -> int8 -> parity gate -> calibrated thresholds -> guard bundle
    recipes/   the whole flow for a purpose: a policy's guard with its report (guard-build all), the default pack (and
               its wheel), adversarial rounds, an encoder pretrained on policy tasks
    llm/       the LLM every data step talks to: any OpenAI-compatible endpoint, or the embedded llama.cpp server
    checkpoint the run folders, journals and LLM usage logs that let a killed run continue

Needs the ``builder`` extra (torch, transformers, optimum-onnx); the runtime, ``guard_sdk``, never imports it.
"""

__version__ = "0.1.0"
