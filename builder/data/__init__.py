"""From a policy in words to a labeled dataset (the data engine), one module per step:

policy      policy YAML -> Policy
dimensions  Policy -> dimensions and the cells that cover them pairwise
candidates  cells -> generated candidate messages (violating, complying, boundary); seeds and retrieved real texts
curate      candidates -> filtered, de-duplicated, balanced examples
verify      candidates -> debate-verified labels, with transcripts
engine      all of the above, checkpointed and resumable -> dataset.jsonl + datasheet
dataset     labeled JSONL (from the engine or your own) -> LabeledDataset, what every trainer reads; JSONL texts
"""

from .dataset import LabeledDataset, LabeledExample, iter_text_rows, load_jsonl, read_texts, write_jsonl
from .engine import DataConfig, Datasheet, abuild_dataset, build_dataset
from .policy import Policy, PolicyInput, Seed, SeedLabel, load_policy, parse_policy

__all__ = [
    "DataConfig",
    "Datasheet",
    "LabeledDataset",
    "LabeledExample",
    "Policy",
    "PolicyInput",
    "Seed",
    "SeedLabel",
    "abuild_dataset",
    "build_dataset",
    "iter_text_rows",
    "load_jsonl",
    "load_policy",
    "parse_policy",
    "read_texts",
    "write_jsonl",
]
