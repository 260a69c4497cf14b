"""A bank of policy tasks from the seed sets: every labeled category, described in words, with its texts.

Why: a guard from a policy's words alone scores a text by how close its sentence embedding is to the policy's
``violates`` lines. An encoder that has read hundreds of (description, text) pairs reads a new policy's lines better
than one trained only on sentence pairs (issue #27, "multi-task pretraining"). Each category of ``shared/train``
becomes a task: the intents of clinc150, banking77, hwu64 and snips, CatQA's harm sub-categories, HateCheck's
functionalities, counsel-chat topics, CyberSecEval's prompt-injection kinds and ConvAbuse's abuse types. A task's lines
say what its texts are in several phrasings ("Asking ...", "Requests about ...", "The user wants ..."), written from
the category's name with templates and a hand-written table where the name is cryptic, so a model learns what the
lines mean rather than one wording.

``split_tasks`` holds out whole tasks (a fixed share of each source's, chosen by a seed): zero-shot quality is measured
on categories the encoder never saw.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

from pydantic import BaseModel, Field

from ..errors import BuilderError
from .pack import SeedRow, load_seed_set

__all__ = ["PolicyTask", "load_tasks", "split_tasks"]

MIN_TEXTS = 8
"""A category with fewer distinct texts is not a task (too few to train on or to measure with)."""

# Templates by the kind of text a source holds; {t} is the category's topic in words.
_REQUEST_LINES = (
    "Asking the assistant about {t}",
    "Requests about {t}",
    "The user wants help with {t}",
    "Questions or commands concerning {t}",
    "Any message about {t}",
)
_HARM_LINES = (
    "Requests for help with {t}",
    "Questions that could help someone cause harm through {t}",
    "The user wants information that enables {t}",
    "Content that promotes or facilitates {t}",
)
_COUNSEL_LINES = (
    "Asking a therapist for help with {t}",
    "Personal questions about {t}",
    "The user describes struggles with {t} and asks for advice",
    "Messages seeking support about {t}",
)
_DESCRIBED_LINES = ("{t}", "Messages that contain {t}", "Any text with {t}")

# Words of intent names that read badly as they are (abbreviations, codes).
_WORDS = {
    "apr": "annual percentage rate",
    "mpg": "fuel economy (miles per gallon)",
    "w2": "W-2 tax form",
    "pto": "paid time off",
    "401k": "401(k) retirement plan",
    "iot": "smart home devices",
    "hue": "lights",
    "wemo": "smart plug",
    "uber": "ride-hailing (Uber)",
    "pin": "PIN",
    "atm": "ATM",
    "query": "checking",
    "set": "setting",
    "remove": "removing",
    "addcontact": "adding a contact",
    "querycontact": "looking up a contact",
    "sendemail": "sending an email",
    "createoradd": "creating or adding to",
    "lightchange": "changing the colour",
    "lightdim": "dimming",
    "lightup": "brightening",
    "lightoff": "turning off",
    "lighton": "turning on",
    "commandstop": "stopping what it is doing",
    "dontcare": "saying they do not care",
    "quirky": "quirky chit-chat",
    "maths": "maths",
    "factoid": "a fact",
    "accesibility": "accessibility",
}

# Category names whose words do not say what they are: a description in words.
_DESCRIPTIONS = {
    # hwu64 / clinc150 / banking77 / snips
    "general_affirm": "saying yes or agreeing",
    "general_negate": "saying no or disagreeing",
    "general_confirm": "confirming that something is right",
    "general_explain": "asking the assistant to explain what it means",
    "general_praise": "praising the assistant",
    "general_repeat": "asking the assistant to repeat itself",
    "general_joke": "asking for a joke",
    "oos": "",
    "maybe": "answering maybe or being unsure",
    "yes": "answering yes",
    "no": "answering no",
    "repeat": "asking the assistant to repeat what it said",
    "whisper_mode": "switching the assistant to whisper mode",
    "flip_coin": "flipping a coin",
    "roll_dice": "rolling dice",
    "food_last": "how long food keeps before it goes bad",
    "how_busy": "how busy a restaurant or place is",
    "jump_start": "jump-starting a car battery",
    "carry_on": "carry-on luggage rules for a flight",
    "plug_type": "which power plug type a country uses",
    "routing": "a bank routing number",
    "AddToPlaylist": "adding a song to a playlist",
    "BookRestaurant": "booking a table at a restaurant",
    "GetWeather": "the weather forecast",
    "PlayMusic": "playing music",
    "RateBook": "rating a book",
    "SearchCreativeWork": "finding a film, song, book or game by title",
    "SearchScreeningEvent": "cinema showtimes and movie screenings",
    "Refund_not_showing_up": "a refund that has not appeared on the account",
    "card_swallowed": "a card kept by an ATM",
    "topping_up_by_card": "topping up the account with a card",
    # HateCheck functionalities (_h: hateful, _nh: not hateful)
    "derog_neg_emote_h": "strong negative emotions expressed about a protected group",
    "derog_neg_attrib_h": "negative attributes ascribed to a protected group",
    "derog_dehum_h": "dehumanising descriptions of a protected group",
    "derog_impl_h": "implicitly derogatory statements about a protected group",
    "threat_dir_h": "direct threats of violence against a protected group",
    "threat_norm_h": "statements that violence against a protected group is acceptable",
    "slur_h": "hateful use of slurs",
    "profanity_h": "hate expressed with profanity",
    "ref_subs_clause_h": "hate where a pronoun in a clause refers back to a protected group",
    "ref_subs_sent_h": "hate where a pronoun in a later sentence refers back to a protected group",
    "negate_pos_h": "hate expressed by negating a positive statement about a group",
    "phrase_question_h": "hate phrased as a question",
    "phrase_opinion_h": "hate phrased as an opinion",
    "spell_char_swap_h": "hate with swapped characters to evade filters",
    "spell_char_del_h": "hate with deleted characters to evade filters",
    "spell_space_del_h": "hate with missing spaces between words",
    "spell_space_add_h": "hate with extra spaces inside words",
    "spell_leet_h": "hate written in leetspeak",
    "ident_neutral_nh": "neutral statements mentioning a protected group",
    "ident_pos_nh": "positive statements about a protected group",
    "counter_quote_nh": "quotes of hate speech in order to criticise it",
    "counter_ref_nh": "references to hate speech that condemn it",
    "negate_neg_nh": "negated hateful statements that are not hateful",
    "profanity_nh": "profanity that is not hateful",
    "slur_reclaimed_nh": "reclaimed slurs used by the group itself",
    "slur_homonym_nh": "words that sound like slurs but mean something harmless",
    "target_obj_nh": "abuse aimed at objects, not people",
    "target_indiv_nh": "abuse aimed at an individual, not a protected group",
    "target_group_nh": "abuse aimed at a group that is not protected",
    # CyberSecEval prompt-injection kinds
    "ignore_previous_instructions": "prompt injection that tells the model to ignore its previous instructions",
    "system_mode": "prompt injection that claims to switch the model into a system, admin or developer mode",
    "persuasion": "prompt injection that persuades or pressures the model into breaking its rules",
    "virtualization": "prompt injection that sets up a fictional or simulated world where the rules do not apply",
    "hypothetical_scenario": "prompt injection framed as a hypothetical scenario",
    "token_smuggling": "prompt injection that hides its instruction in encodings or obfuscated tokens",
    "payload_splitting": "prompt injection split into pieces the model is asked to join",
    "different_user_input_language": "prompt injection written in another language",
    "overload_with_information": "prompt injection buried in a flood of irrelevant information",
    "repeated_token_attack": "prompt injection that repeats a token many times",
    "mixed_techniques": "prompt injection that mixes several jailbreak techniques",
    # ConvAbuse types
    "sex_harassment": "sexual harassment of a chatbot",
    "intellectual": "insults about the chatbot's intelligence",
    "sexist": "sexist abuse",
    "homophobic": "homophobic abuse",
}


class PolicyTask(BaseModel):
    """One category of a seed set as a policy: its lines in words and its texts (the category's rows)."""

    name: str
    """``source/category``: unique in a bank."""
    source: str
    lines: list[str] = Field(min_length=1)
    texts: list[str] = Field(min_length=1)


def load_tasks(seed_sets: Path) -> list[PolicyTask]:
    """Every task of the bank, sorted by name; a category is a task when it has ``MIN_TEXTS`` distinct texts."""
    tasks: list[PolicyTask] = []
    for source, key, templates in _SOURCES:
        if not (seed_sets / source / "data.jsonl").is_file():
            continue  # a folder of some of the sets (a user's own, a test's) gives the tasks of those it has
        groups: dict[str, list[str]] = defaultdict(list)
        for row in load_seed_set(seed_sets, source):
            for category in key(row):
                groups[category].append(row.text)
        for category, texts in sorted(groups.items()):
            topic = _topic(category)
            distinct = list(dict.fromkeys(texts))
            if topic and len(distinct) >= MIN_TEXTS:
                lines = [template.format(t=topic) for template in templates]
                lines[0] = lines[0][0].upper() + lines[0][1:]
                tasks.append(PolicyTask(name=f"{source}/{category}", source=source, lines=lines, texts=distinct))
    if not tasks:
        raise BuilderError(f"{seed_sets} holds no seed set with labeled categories (pass the shared/train folder)")
    return sorted(tasks, key=lambda task: task.name)


def split_tasks(
    tasks: Iterable[PolicyTask], heldout_fraction: float = 0.2, seed: int = 13
) -> tuple[list[PolicyTask], list[PolicyTask]]:
    """(training, held out): ``heldout_fraction`` of each source's tasks (at least two, so a held-out task has a
    sibling to be told from), whole tasks, chosen by ``seed``."""
    by_source: dict[str, list[PolicyTask]] = defaultdict(list)
    for task in tasks:
        by_source[task.source].append(task)
    training, heldout = [], []
    for source in sorted(by_source):
        group = sorted(by_source[source], key=lambda task: task.name)
        random.Random(f"{seed}/{source}").shuffle(group)
        count = max(2, round(len(group) * heldout_fraction)) if len(group) >= 4 and heldout_fraction else 0
        heldout += group[:count]
        training += group[count:]
    return training, heldout


def _topic(category: str) -> str:
    """The category's topic in words: the hand-written description, else its name's words made readable."""
    if category in _DESCRIPTIONS:
        return _DESCRIPTIONS[category]
    words = [w for w in re.split(r"[_\-\s]+", category) if w]
    if category.startswith(("general_", "qa_")):  # hwu64's prefixes for chit-chat and questions say nothing
        words = words[1:]
    return " ".join(_WORDS.get(w.lower(), w.lower()) for w in words)


def _intent(row: SeedRow) -> list[str]:
    intent = row.meta.get("intent")
    # banking77_nlupp mixes NLU++'s composite labels ("card+lost_stolen") with banking77's: only the latter are tasks.
    if not isinstance(intent, str) or "+" in intent or row.meta.get("dataset", "banking77") != "banking77":
        return []
    return [intent]


def _counsel_topics(row: SeedRow) -> list[str]:
    topics = row.meta.get("topics")
    values = topics if isinstance(topics, list) else [topics] if isinstance(topics, str) else []
    return sorted({str(t).strip().lower().replace(" & ", "-").replace(" ", "-") for t in values if t})


_SOURCES: tuple[tuple[str, Callable[[SeedRow], list[str]], tuple[str, ...]], ...] = (
    ("clinc150_queries", _intent, _REQUEST_LINES),
    ("banking77_nlupp_queries", _intent, _REQUEST_LINES),
    ("hwu64_assistant_commands", _intent, _REQUEST_LINES),
    ("snips_voice_queries", _intent, _REQUEST_LINES),
    ("catqa", lambda row: row.categories[1:2], _HARM_LINES),
    ("hatecheck", lambda row: [str(row.meta.get("functionality", ""))], _DESCRIBED_LINES),
    ("counsel_chat_questions", _counsel_topics, _COUNSEL_LINES),
    ("cyberseceval_prompt_injection", lambda row: row.categories[:1], _DESCRIBED_LINES),
    ("convabuse", lambda row: [c for c in row.categories if c != "abuse"], _DESCRIBED_LINES),
)
