"""Recipes that run the whole pipeline for a purpose:

pack          shared/train seed sets -> the default content-safety, prompt-injection and answer-safety bundles
pack_answers  the answer-safety guard's (request, answer) training pairs
pack_wheel    a built pack -> the ``guard-sdk-pack`` wheel
adversarial   training data + policy -> rounds of bandit-chosen, debate-verified hard examples, retrained each round
policy_guard  policy (+ the data engine's rows, a corpus) -> guard-build all's guard and the report on how far to trust it
policy_tasks  seed sets -> a bank of tasks in words (every labeled category), whole tasks held out
pretrain      the task bank -> an encoder pretrained on (policy line, text) pairs (guard-build pretrain)
"""
