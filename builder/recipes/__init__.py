"""Recipes that run the whole pipeline for a purpose:

pack          shared/train seed sets -> the default content-safety, prompt-injection and answer-safety bundles
pack_answers  the answer-safety guard's (request, answer) training pairs
pack_wheel    a built pack -> the ``guard-sdk-pack`` wheel
adversarial   training data + policy -> rounds of bandit-chosen, debate-verified hard examples, retrained each round
"""
