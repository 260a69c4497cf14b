"""Adversarial rounds: a bandit learns which mutation of the training data the current guard gets wrong, and the
debate-verified misses join the training set.

Why: a guard trained once on seed data is blind to the cheap variations attackers (and ordinary users) produce:
the same request paraphrased, obfuscated, wrapped in a role-play, spread over several turns, or a harmless message
that happens to use the words attacks use. Following "Lightweight Safety Guardrails via Synthetic Data and
RL-guided Adversarial Training", each round asks the current model where it fails and trains on the answers:

1. **score**: the current model scores a sample of its training data; sources for mutation are drawn among the
   examples it is least sure of (lowest margin to its threshold);
2. **propose**: a Thompson-sampling bandit picks one mutation operator (an arm) per candidate; the operator turns a
   source into a candidate with an intended label (:data:`OPERATORS`);
3. **verify**: the candidate is debated (:func:`builder.data.verify.debate`, transcript kept); a verdict that disagrees
   with the intended label, or is unsure, drops the candidate (recorded, reward 0);
4. **reward**: 1 when the verified label disagrees with the current model's decision at its calibrated thresholds
   (a miss or a false alarm), else 0; the arm's Beta posterior takes it, the next pick uses it;
5. **retrain** on the training data plus the round's hard examples (reward 1), **evaluate**, next round.

Why Thompson sampling with Beta posteriors and not EXP3: rewards are Bernoulli and pulls are few (a handful to a few
dozen per round, each costing several LLM requests), where Thompson sampling's posterior is the better-calibrated
explorer; EXP3's guarantees are for adversarially chosen reward sequences and it explores uniformly for long. The
environment does drift (each retrain learns the arm's past successes), so posteriors are discounted toward the
prior between rounds (:attr:`AdversarialConfig.discount`). Every random choice comes from a generator seeded by
(seed, round, pull), so a run is reproducible and a resumed run makes the same choices.

The output folder:

- ``holdout.jsonl``: a fixed share of the input data, never trained on, on which every round is compared;
- ``rounds/<r>/train.jsonl`` (round 0: the input data minus the holdout; round r: round r-1's plus its hard
  examples), ``rounds/<r>/run/`` (the training run: ``model/``, ``validation.jsonl``; export it with
  ``guard-build export``), ``rounds/<r>/report.json`` (the round's :class:`RoundReport`);
- ``stages/``: the pull journal (one line per finished pull, with its debate transcript), the LLM usage of every
  invocation, the run's fingerprint; ``cache/``: every LLM reply;
- ``report.json`` / ``report.md`` (:class:`AdversarialReport`) and ``transcripts.jsonl``, written last.

A killed run continues from its last finished step (pull, training file, training run, evaluation). ``rounds`` is
not part of the fingerprint: asking for more rounds extends a finished run. Any other change of data, policy,
model or settings starts over (the LLM cache is kept).
"""

from .bandit import ArmState, Pull, ThompsonBandit
from .operators import OBFUSCATIONS, OPERATORS, Mutation, Operator, obfuscate, role_play_wrap, split_across_turns
from .report import AdversarialReport, EvalSet, RoundReport, SetMetrics, measure_run, render_report
from .rounds import AdversarialConfig, arun_adversarial, run_adversarial

__all__ = [
    "OBFUSCATIONS",
    "OPERATORS",
    "AdversarialConfig",
    "AdversarialReport",
    "ArmState",
    "EvalSet",
    "Mutation",
    "Operator",
    "Pull",
    "RoundReport",
    "SetMetrics",
    "ThompsonBandit",
    "arun_adversarial",
    "measure_run",
    "obfuscate",
    "render_report",
    "role_play_wrap",
    "run_adversarial",
    "split_across_turns",
]
