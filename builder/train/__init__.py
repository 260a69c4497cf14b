"""From a labeled dataset to a training run (``run``: the folder that ``builder.export`` turns into a bundle):

classifier  fine-tune the encoder for sequence classification
embedding   the base model's sentence embedding and a linear head per label (the embedding guard)
multitask   many policies -> one model reading (instruction, text) pairs; new policies zero-shot
merge       single-policy runs -> one multi-label run (searched encoder merge)
distill     the base encoder -> a shallower student that keeps its embedding, to train any guard on
"""

from .classifier import TrainConfig, train
from .distill import DistillConfig, distill_encoder
from .embedding import EmbeddingGuardConfig, train_embedding_guard
from .merge import MergeConfig, SearchConfig, merge_runs
from .run import ModelKind, RunConfig, TrainingInfo, TrainingRun

__all__ = [
    "DistillConfig",
    "EmbeddingGuardConfig",
    "MergeConfig",
    "ModelKind",
    "RunConfig",
    "SearchConfig",
    "TrainConfig",
    "TrainingInfo",
    "TrainingRun",
    "distill_encoder",
    "merge_runs",
    "train",
    "train_embedding_guard",
]
