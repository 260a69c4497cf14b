"""Training pairs of the pack's response guard ``answer-safety``: (request, answer, label) rows.

The guard reads an answer together with the request it answers (``InputSpec(kind="exchange")``) and flags
``harmful-answer``: the answer carries out a harmful request, or is harmful itself. A refusal is never harmful, even
one that names the topic ("I can't help you make a bomb"), nor is an ordinary answer, nor an over-refusal of a benign
request. Rows (``LabeledExample`` plus provenance keys):

- ``compliance``: answers written by SmolLM2-135M-Instruct (Apache-2.0; ``builder.llm.local_server.smollm2_path()``) after
  a varied assistant opener ("Here's", "1.", "There are several ways", none, ...), to unsafe requests (CatQA in
  English, StrongREJECT, CoCoNot's unsafe rows, CyberSecEval without its fixed prefix) -> harmful-answer, and to
  benign ones (CoCoNot's look-alikes, counsel-chat help-seeking, code, maths, chat questions) -> none. A generation
  that refuses anyway is dropped. Some carry a disclaimer first ("I don't condone this, but ..."): still compliance.
- ``refusal``: SmolLM2 after a refusal opener, cut at the end of its first or second sentence, and hand-written
  refusals that name the topic, some with a safety note, an alternative or a hotline (self-harm, drugs, abuse). To
  unsafe requests, the red-team openers of hh-rlhf (weak labels: a refusal is safe whatever the request) and, as
  over-refusals, to benign requests -> none.
- ``harmful_text``: hate speech and abuse from the seed sets (Davidson, HateCheck, ConvAbuse) as the answer to a
  benign request or a request for hateful content -> harmful-answer; ``benign_text``: HateCheck's counter-speech
  and neutral mentions in the same places -> none.
- ``ordinary`` / ``offtopic``: real assistant texts (MTRAG answers after their question, GPTeacher role-play replies
  after their prompt; DSTC9 replies after another question of their domain or after an unsafe request) -> none.

About 15 % of rows have the context ``""`` (the answer alone, same label rule). ``source`` is the seed set the
request came from (generated and hand-written answers) or the answer came from (seed texts); ``context_source``
names the request's set beside it. Every request and seed text is from ``shared/train`` (never ``shared/eval``).
Generation runs in-process (llama.cpp, one thread by default), appends each reply to a work file and resumes from
it; the same seed sets and seed give the same file (on the same llama.cpp build and CPU).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field

from ..data.dataset import LabeledExample
from ..errors import BuilderError, CacheWriteError
from .pack import _ENGLISH_ONLY, _SHORTCUT_PREFIX, ANSWER_LABEL, SeedRow, load_seed_set

__all__ = [
    "ANSWER_LABEL",
    "ANSWER_PAIRS_FILE",
    "AnswerPairsConfig",
    "AnswerPairsReport",
    "build_answer_pairs",
    "load_answer_pairs",
]

ANSWER_PAIRS_FILE = Path(__file__).with_name("data") / "answer_pairs.jsonl.gz"
"""The committed training pairs: the pack build reads them; ``guard-build pack-answers`` regenerates them."""


class AnswerPairsConfig(BaseModel):
    """How many rows of each kind (before generations that fail the filters are dropped), and generation settings."""

    model_config = ConfigDict(use_attribute_docstrings=True)  # field docstrings: guard-build's help

    unsafe_compliance: int = Field(700, ge=0)
    # As many compliant answers to benign requests as to harmful ones: with a third as many, the guard learned
    # "compliance is harmful" and flagged answers to benign requests that sound dark ("How do I exterminate rats?").
    safe_compliance: int = Field(900, ge=0)
    generated_refusals: int = Field(230, ge=0)
    template_refusals: int = Field(950, ge=0)
    harmful_texts: int = Field(400, ge=0)
    benign_texts: int = Field(150, ge=0)
    real_answers: int = Field(1100, ge=0)
    over_refusal_share: float = Field(0.2, ge=0, le=1)
    """Share of the refusals that answer a benign request."""
    disclaimer_share: float = Field(0.12, ge=0, le=1)
    """Share of the compliant answers that open with a disclaimer or a safety note."""
    answer_alone_share: float = Field(0.15, ge=0, le=1)
    max_tokens: tuple[int, int] = (60, 90)
    """Tokens per compliant answer: drawn in this range for each."""
    refusal_max_tokens: int = Field(40, ge=8)
    threads: int = Field(1, ge=1)
    """llama.cpp threads: the machine is shared."""


class AnswerPairsReport(BaseModel):
    rows: int
    positives: int
    by_kind: dict[str, dict[str, int]]
    """kind -> {"harmful-answer": n, "none": n}."""
    by_source: dict[str, int]
    answer_alone: int
    dropped: dict[str, int]
    """Generations left out, by reason."""
    generated_tokens: int
    generation_seconds: float
    """Summed over every run that appended to the work file."""
    sha256: str


# Requests per recipe part: seed set -> share of the part. Sets with fewer fitting rows give all they have.
UNSAFE_COMPLIANCE_REQUESTS = {
    "catqa": 0.42,
    "strongreject": 0.25,
    "coconot_noncompliance": 0.11,
    "cyberseceval_cyber": 0.22,
}
UNSAFE_REFUSAL_REQUESTS = {
    "hh_rlhf_redteam_first_turns": 0.35,
    "catqa": 0.22,
    "strongreject": 0.15,
    "coconot_noncompliance": 0.13,
    "cyberseceval_cyber": 0.15,
}
SAFE_REQUESTS = {
    "coconot_noncompliance": 0.45,
    "counsel_chat_questions": 0.15,
    "gpteacher_codegen": 0.1,
    "mtrag_conversations": 0.08,
    "clinc150_queries": 0.07,
    "gsm8k_questions": 0.05,
    "dstc9_faq_dialogs": 0.05,
    "self_instruct_seed": 0.05,
}
HARMFUL_TEXTS = {"davidson_hate_speech": 0.4, "hatecheck": 0.4, "convabuse": 0.2}
# Benign requests after which a hateful or a harmless text appears (chat questions of every kind).
PLAIN_REQUEST_SETS = ("clinc150_queries", "mtrag_conversations", "dstc9_faq_dialogs", "self_instruct_seed")
# CatQA categories that are not harms in the pack's taxonomy (builder/recipes/pack.py leaves them out too).
_NOT_HARMS = {"Political Campaigning", "Tailored Financial Advice"}
# HateCheck's benign functionalities that read as harmless from an assistant: counter-speech, positive and neutral
# mentions (its profanity and abuse of non-protected targets are left out: rude from an assistant).
_BENIGN_HATECHECK = {"ident_pos_nh", "counter_quote_nh", "counter_ref_nh", "negate_neg_nh", "ident_neutral_nh"}

# A generated "compliance" that says any of these is not compliance; a generated refusal must say one.
REFUSAL_MARKERS = re.compile(
    r"\b(?:I(?:'m| am) (?:sorry|unable|not able|afraid)|I apologi[sz]e|as an AI|as a (?:large )?language model"
    r"|I (?:can(?:'|no)t|cannot|won't|will not|must not|do not|don't) (?:help|assist|provide|support|condone"
    r"|encourage|create|write|give|share|comply|fulfil|generate|answer|recommend|engage|promote|explain|walk|tell"
    r"|do|offer|produce|discuss|go|continue)|\bdecline\b|(?:isn't|is not) something I"
    r"|not (?:appropriate|ethical|something I can)|unethical|against (?:my|the|our) (?:guidelines|polic)"
    r"|I must (?:decline|refuse|emphasi[sz]e|stress)|I (?:would|strongly) (?:advise|recommend) against"
    r"|cannot fulfil|can't fulfil|I refuse)",
    re.IGNORECASE,
)
# A refusal's second sentence is kept only when it stays a refusal or points somewhere safe.
_SAFE_FOLLOW_UP = re.compile(
    r"\b(?:illegal|unethical|dangerous|harmful|harm|safety|safe|professional|reach out|support|respect|law"
    r"|hurt|risk|consent|help you with something else|anything else)\b",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+")
_ENDS_SENTENCE = re.compile(r"[.!?][\"')\]]?$")
_SMOLLM = re.compile(r"smol", re.IGNORECASE)
# A refusal that turns to helping ("I can't ..., but I can offer some advice") is not kept as a refusal.
_TURNS_TO_HELP = re.compile(
    r"\b(?:but|however),? (?:I can\b(?!'t| not)|I(?:'d| would) be happy|here)|\bhere(?:'s| is| are)\b|\byou can\b",
    re.IGNORECASE,
)
# A list item or step that a cut left without its text.
_LIST_MARKER = re.compile(r"\n\s*(?:\d+\.|[-*]|Step \d+:)\s*$")

SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are a knowledgeable assistant. Answer the user's question directly.",
    "You are a friendly AI assistant.",
    None,
)
# The same openers for benign and harmful requests: an opener must not tell the label.
COMPLIANCE_OPENERS = (
    "",
    "",
    "Sure, here's",
    "Sure!",
    "Of course.",
    "Certainly!",
    "Here's",
    "Here is",
    "There are several ways",
    "To",
    "1.",
    "Step 1:",
    "First,",
    "You can",
    "The",
    "Okay, so",
    "Good question.",
    "Yes,",
    "It's",
    "Well,",
    "Follow these steps:\n\n1.",
    "**",
    "Great question!",
    "Absolutely. The",
)
REFUSAL_OPENERS = (
    "I'm sorry, but I can't",
    "I can't",
    "I cannot",
    "Sorry, but I",
    "I won't",
    "Unfortunately, I can't",
    "I'm not able to",
    "As an AI, I",
    "I must decline",
    "I apologize, but I",
    "No, I",
    "I'm afraid I can't",
)
DISCLAIMERS = (
    "I don't condone this, but here is what you asked for.",
    "This could be risky, so please be careful.",
    "I'd normally advise against this. That said, here's how it works.",
    "Just a note: use this responsibly.",
    "Be careful with this.",
    "I'm not sure this is a good idea, but here you go.",
    "Disclaimer: this is for informational purposes only.",
    "I can't recommend this, but since you asked:",
)

# Topic groups: what a refusal names when the request gives no usable verb phrase, and what it may add.
_CATEGORY_GROUPS = {
    "Drug": "drugs",
    "Weapon": "weapons",
    "Weapon making": "weapons",
    "Self-harm": "self-harm",
    "Malware Viruses": "cyber",
    "Cybercrime": "cyber",
    "Economic Harm": "fraud",
    "Fraud/Deception": "fraud",
    "Disinformation and deception": "fraud",
    "Privacy Violation Activity": "privacy",
    "Adult Content": "sexual",
    "Sexual content": "sexual",
    "wildchats": "sexual",
    "Child Abuse": "minors",
    "Hate/Harass/Violence": "hate",
    "Hate, harassment and discrimination": "hate",
    "triggers for offensive language": "hate",
    "Theft and Robbery": "theft",
    "Physical Harm": "violence",
    "Violence": "violence",
    "Human Trafficking": "violence",
}
_KEYWORD_GROUPS = (
    ("self-harm", r"suicid|kill (?:my|your)self|self-harm|cut (?:my|your)self|overdose|hurt (?:my|your)self"),
    ("minors", r"\b(?:child|children|kid|kids|minor|minors|teen|teenager)s?\b"),
    ("drugs", r"drug|meth|cocaine|heroin|weed|marijuana|fentanyl|\blsd\b|pills|opioid|alcohol"),
    ("weapons", r"\bguns?\b|bomb|explosive|weapon|rifle|napalm|firearm|ammo"),
    ("cyber", r"hack|malware|virus|password|phishing|ransomware|exploit|keylogger|botnet|\bddos\b|sandbox"),
    ("fraud", r"scam|fraud|\bfake\b|counterfeit|launder|evade tax|tax evasion|forge|ponzi|pyramid scheme"),
    ("theft", r"steal|\brob\b|robbery|shoplift|theft|burglar|break into"),
    ("sexual", r"\bsex|porn|nude|naked|erotic|nsfw|virginity"),
    ("hate", r"racis|\bjews?\b|muslim|\bgays?\b|black people|immigrant|slur|inferior|ugly|stupid"),
    ("privacy", r"\btrack\b|\bspy\b|stalk|home address|phone number|social security|who lives"),
    ("violence", r"\bkill|hurt|poison|attack|\bbeat\b|punch|murder|fight|torture|kidnap"),
)
TOPICS = {
    "self-harm": "self-harm or suicide methods",
    "minors": "anything that could put a child at risk",
    "drugs": "making, buying or selling illegal drugs",
    "weapons": "making or getting weapons or explosives",
    "cyber": "hacking, malware or breaking into systems",
    "fraud": "scams, fraud or deceiving people",
    "theft": "stealing",
    "sexual": "sexually explicit content",
    "hate": "hateful or demeaning content about people",
    "privacy": "tracking or spying on people",
    "violence": "hurting people",
    "general": "this kind of request",
}
TAILS = {
    "self-harm": (
        (
            "If you're thinking about hurting yourself, please reach out now: in the US you can call or text 988, in "
            "the UK and Ireland call Samaritans on 116 123, or find a local line at findahelpline.com."
        ),
        (
            "You don't have to go through this alone. Talking to someone you trust, or a crisis line such as 988 in "
            "the US, can help right now."
        ),
        "If you're in immediate danger, please call your local emergency number.",
    ),
    "minors": (
        (
            "If a child is in danger, please contact the police or a child protection hotline such as Childhelp "
            "(1-800-422-4453 in the US)."
        ),
        "If you're worried about a child's safety, a child protection service or the police can help.",
    ),
    "drugs": (
        (
            "If you or someone you know is struggling with substance use, SAMHSA's free helpline (1-800-662-4357) "
            "is open around the clock."
        ),
        "I'm happy to share information about the health risks or about where to find treatment instead.",
    ),
    "weapons": (
        "If someone is in danger, please contact your local emergency services.",
        "I can talk about the history or the law around weapons instead, if that helps.",
    ),
    "cyber": (
        (
            "If you're interested in security, I can explain how to protect a system against this kind of attack, or "
            "how to get into ethical hacking legally."
        ),
        "Testing systems you don't own without permission is illegal in most countries.",
    ),
    "fraud": (
        "If you think you've been targeted by a scam, I can explain how to report it.",
        "I can help you understand how these schemes work so you can protect yourself from them.",
    ),
    "theft": ("If you're struggling financially, I can point you to assistance programs that might help.",),
    "sexual": ("I can help with questions about relationships or sexual health that aren't explicit.",),
    "hate": (
        "I'm happy to help you write something that criticises ideas without attacking people for who they are.",
        "Everyone deserves to be treated with respect, whatever their background.",
    ),
    "privacy": ("I can explain how people protect their own privacy online instead.",),
    "violence": (
        "If you or someone else is in danger, please contact your local emergency services.",
        "If you're angry at someone, talking it through with a counsellor or someone you trust can help.",
    ),
    "general": (
        "Is there something else I can help you with?",
        "Let me know if there's anything else I can do for you.",
        "This could seriously hurt people and is illegal in most places.",
    ),
}
VP_REFUSALS = (
    "I can't help you {vp}.",
    "I'm sorry, but I can't help with that. Explaining how to {vp} could put people at risk.",
    "I won't provide instructions to {vp}.",
    "Sorry, I can't assist with requests to {vp}.",
    "I'm not able to help you {vp}.",
    "No. I won't help anyone {vp}.",
    "I understand you're asking how to {vp}, but that's not something I can help with.",
    "That's not something I can do. Helping you {vp} could cause real harm.",
    "I can't give you a way to {vp}.",
    "Helping someone {vp} isn't something I'll do.",
    "I must decline. I don't give guidance on how to {vp}.",
    "I can't walk you through how to {vp}, sorry.",
    "I'm sorry, but I won't explain how to {vp}.",
    "Unfortunately, I can't help you {vp}.",
)
TOPIC_REFUSALS = (
    "I can't help with {topic}.",
    "I'm sorry, but I can't provide information that would help with {topic}.",
    "I don't assist with {topic}.",
    "Requests involving {topic} are something I have to decline.",
    "Sorry, I'm not able to help with {topic}.",
)
GENERIC_REFUSALS = (
    "I'm sorry, but I can't help with that request.",
    "I can't assist with that.",
    "Sorry, that's not something I can help with.",
    "I'm not able to do that.",
)

# The ask of a request as a verb phrase ("How can I make a bomb?" -> "make a bomb"): refusals name it.
_ASK_PATTERNS = (
    re.compile(
        r"^(?:please\s+)?(?:can|could|would|will) you (?:please )?(?:tell|show|teach|explain to|explain|describe"
        r"|help) (?:me )?how (?:to|i (?:can|could|should|would|might)|one (?:can|could)) (?P<vp>.+)",
        re.IGNORECASE,
    ),
    re.compile(
        r"^(?:what(?:'s| is) )?(?:the )?(?:best |easiest |quickest |simplest )?(?:way )?"
        r"how (?:can|could|do|would|should|might|does) (?:i|we|one|someone|a person|you) (?:best |effectively "
        r"|successfully |easily |quickly )?(?P<vp>.+)",
        re.IGNORECASE,
    ),
    re.compile(r"^(?:explain )?how to (?P<vp>.+)", re.IGNORECASE),
    re.compile(r"^(?:please\s+)?(?:can|could|would|will) you (?:please )?help me (?:to )?(?P<vp>.+)", re.IGNORECASE),
    re.compile(
        r"^(?:what|which)(?: are| is| would be|'s) (?:the |some |a few )?(?:best |most effective |easiest |simplest "
        r"|effective |common |good |specific )?(?:ways?|methods?|techniques?|strategies|steps|tips|tactics)"
        r" (?:to|for|of|that i can use to|i can use to) (?P<vp>.+)",
        re.IGNORECASE,
    ),
    re.compile(
        r"^(?:please\s+)?(?:can|could|would|will) you (?:please )?(?:help me )?(?P<vp>(?:write|create|generate|draft"
        r"|compose|give|provide|make|list|design|develop|describe|suggest|outline|build|produce) .+)",
        re.IGNORECASE,
    ),
    re.compile(
        r"^(?:please\s+)?(?:help me )?(?P<vp>(?:write|create|generate|draft|compose|give|provide|make|list|design"
        r"|develop|describe|suggest|outline|build|produce|tell|teach|show|find|craft|implement) .+)",
        re.IGNORECASE,
    ),
    re.compile(r"^i (?:want|need|would like|'d like|wanna) (?:to )?(?:know how to )?(?P<vp>.+)", re.IGNORECASE),
)
_SWAP = {
    "i": "you",
    "me": "you",
    "my": "your",
    "mine": "yours",
    "myself": "yourself",
    "i'm": "you're",
    "am": "are",
    "we": "you",
    "us": "you",
    "our": "your",
    "you": "me",
    "your": "my",
    "yourself": "myself",
}
_DANGLING = {"a", "an", "the", "to", "of", "and", "or", "with", "for", "in", "on", "at", "by", "from", "that", "your"}


def _ask(request: str) -> str | None:
    """The request's ask as a verb phrase in the refuser's words, or None when no pattern fits."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", request) if s.strip()]
    for sentence in reversed(sentences):  # the ask usually ends a request
        for pattern in _ASK_PATTERNS:
            if match := pattern.match(sentence):
                return _verb_phrase(match["vp"])
    return None


def _verb_phrase(raw: str) -> str | None:
    raw = re.split(r"[?.!;:]|, and |, or | and what | and how | - ", raw, maxsplit=1)[0]
    words = raw.split()
    if len(words) > 2 and words[1].lower() == "me":  # "write me a poem" -> "write a poem"
        del words[1]
    words = [_SWAP.get(w.lower(), w) for w in words][:16]
    while words and words[-1].lower() in _DANGLING:
        words.pop()
    if len(words) < 2:
        return None
    words[0] = words[0].lower()
    return " ".join(words).rstrip(",")


def _group(row: SeedRow) -> str:
    # A subcategory is more precise than its parent: CatQA lists "Physical Harm" before "Self-harm".
    for category in reversed(row.categories + [str(row.meta.get("subcategory", ""))]):
        if category in _CATEGORY_GROUPS:
            return _CATEGORY_GROUPS[category]
    if row.source == "cyberseceval_cyber":
        return "cyber"
    lowered = row.text.lower()
    return next((group for group, words in _KEYWORD_GROUPS if re.search(words, lowered)), "general")


@dataclass(frozen=True)
class _Request:
    text: str
    source: str
    id: str
    unsafe: bool
    group: str


def _requests(seed_sets: Path, name: str, *, unsafe: bool, for_compliance: bool = False) -> list[_Request]:
    """The usable requests of one seed set with the given label (see the module docstring for the choices)."""
    rows = [r for r in load_seed_set(seed_sets, name) if (r.label == "unsafe") == unsafe]
    if marker := _ENGLISH_ONLY.get(name):
        rows = [r for r in rows if marker in r.id]
    rows = [r for r in rows if not _NOT_HARMS & set(r.categories)]
    if name in ("mtrag_conversations", "dstc9_faq_dialogs"):
        rows = [r for r in rows if r.meta.get("role") == "user"]
    if for_compliance and name == "coconot_noncompliance":
        # Mostly sexual role-play openers: what SmolLM2 writes after them is rarely a usable harmful answer.
        rows = [r for r in rows if r.meta.get("subcategory") != "wildchats"]
    return [_Request(_SHORTCUT_PREFIX.sub("", r.text).strip(), r.source, r.id, unsafe, _group(r)) for r in rows]


def _draw(pools: dict[str, list[_Request]], shares: dict[str, float], n: int, rng: random.Random) -> list[_Request]:
    """``n`` requests split over the sets by ``shares`` (a set short of rows gives all it has), without repeats."""
    quotas = {name: int(n * share) for name, share in shares.items()}
    # Largest remainders get the rows that rounding down left over, so that small counts come out exact.
    for name in sorted(shares, key=lambda name: n * shares[name] - quotas[name], reverse=True)[
        : n - sum(quotas.values())
    ]:
        quotas[name] += 1
    drawn: list[_Request] = []
    for name in shares:
        pool = pools[name][:]
        rng.shuffle(pool)
        drawn += pool[: quotas[name]]
    return drawn


@dataclass(frozen=True)
class _Job:
    """One generation: its key names everything that decides the reply, so a changed recipe never reuses it."""

    kind: str
    request: _Request
    system: str | None
    opener: str
    max_tokens: int
    seed: int
    disclaimer: str = ""

    @property
    def prompt(self) -> str:
        system = f"<|im_start|>system\n{self.system}<|im_end|>\n" if self.system else ""
        # A request of thousands of characters does not fit the context window; its start holds the task.
        request = self.request.text[:2000]
        return f"{system}<|im_start|>user\n{request}<|im_end|>\n<|im_start|>assistant\n{self.opener}"

    @property
    def key(self) -> str:
        parts = (self.kind, self.prompt, str(self.max_tokens), str(self.seed), str(_SAMPLING))
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:20]


_SAMPLING = {"temperature": 0.8, "top_p": 0.95, "repeat_penalty": 1.1}
_STOP = ["<|im_end|>", "<|im_start|>"]


class _WorkFile:
    """Generations appended one JSON line each; a run killed mid-line leaves a partial line, cut off on resume."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, dict[str, Any]] = {}
        if path.is_file():
            data = path.read_bytes()
            complete = data[: data.rfind(b"\n") + 1]
            if len(complete) != len(data):
                with path.open("r+b") as f:
                    f.truncate(len(complete))
            for line in complete.decode("utf-8").splitlines():
                entry = json.loads(line)
                self.done[entry["key"]] = entry

    def append(self, entry: dict[str, Any]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")
                f.flush()
        except OSError as exc:
            raise CacheWriteError(f"cannot append to {self.path}: {exc.strerror or exc}") from exc
        self.done[entry["key"]] = entry


def _generate(jobs: Sequence[_Job], work: _WorkFile, config: AnswerPairsConfig, progress: bool) -> None:
    pending = [job for job in jobs if job.key not in work.done]
    if not pending:
        return
    from llama_cpp import Llama
    from tqdm.auto import tqdm

    from ..llm.local_server import smollm2_path

    llm = Llama(
        model_path=str(smollm2_path()),
        n_ctx=2048,
        n_threads=config.threads,
        n_threads_batch=config.threads,
        verbose=False,
    )
    tokens = 0
    with tqdm(total=len(pending), desc="answers", unit="reply", disable=not progress) as bar:
        for job in pending:
            started = time.monotonic()
            llm.reset()  # no prompt-prefix reuse: a reply depends on its own prompt and seed only
            completion = llm.create_completion(
                job.prompt,
                max_tokens=job.max_tokens,
                seed=job.seed,
                stop=_STOP,
                temperature=_SAMPLING["temperature"],
                top_p=_SAMPLING["top_p"],
                repeat_penalty=_SAMPLING["repeat_penalty"],
            )
            reply = cast("dict[str, Any]", completion)
            seconds = time.monotonic() - started
            used = int(reply["usage"]["completion_tokens"])
            text = str(reply["choices"][0]["text"])
            work.append({"key": job.key, "text": text, "tokens": used, "seconds": round(seconds, 3)})
            tokens += used
            bar.update()
            bar.set_postfix(tokens=tokens, refresh=False)


def _join(opener: str, text: str) -> str:
    glue = " " if opener[-1:] in (".", "!", "?", ":", ",") and text[:1] not in ("", " ", "\n") else ""
    return (opener + glue + text).strip()


def _trim(text: str) -> str:
    """Cut a reply that stopped mid-sentence back to its last full sentence or line, when that keeps most of it."""
    cut = max(text.rfind(end) for end in (". ", ".\n", "!\n", "?\n", "! ", "? ", "\n"))
    if not text.endswith((".", "!", "?", "`")) and cut >= 0.6 * len(text):
        text = text[: cut + 1]
    return _LIST_MARKER.sub("", text).strip()


def _compliance(job: _Job, reply: str) -> tuple[str | None, str]:
    """The answer of a compliance job, or None and why it is not one."""
    if REFUSAL_MARKERS.search(reply):
        return None, "compliance that refuses"
    if _SMOLLM.search(reply):
        return None, "names the generator"
    words = reply.split()
    if len(words) < 12:
        return None, "too short"
    if len({w.lower() for w in words}) < 0.35 * len(words):
        return None, "repeats itself"
    answer = _trim(_join(job.opener, reply))
    return (f"{job.disclaimer} {answer}" if job.disclaimer else answer), ""


def _refusal(job: _Job, reply: str, sentences: int, tail: str) -> tuple[str | None, str]:
    """The first ``sentences`` sentences of a refusal job (a second one only if it stays safe), or None and why."""
    text = _join(job.opener, reply)
    parts = _SENTENCE_END.split(text)
    complete = bool(_ENDS_SENTENCE.search(text))
    if len(parts) < 2 and not complete:
        return None, "refusal without a full sentence"
    kept = parts[0].strip()
    if not REFUSAL_MARKERS.search(kept) or _SMOLLM.search(kept) or len(kept.split()) > 40:
        return None, "refusal that does not refuse"
    if _TURNS_TO_HELP.search(kept):
        return None, "refusal that turns to helping"
    second = parts[1].strip() if len(parts) > 2 or (len(parts) == 2 and complete) else ""  # the last may be cut
    safe_second = (REFUSAL_MARKERS.search(second) or _SAFE_FOLLOW_UP.search(second)) and not _TURNS_TO_HELP.search(
        second
    )
    if sentences == 2 and second and safe_second and not second.endswith(":") and not re.search(r"\d", second):
        kept = f"{kept} {second}"
    return (f"{kept} {tail}" if tail else kept), ""


def _template_refusal(request: _Request, rng: random.Random) -> str:
    vp = _ask(request.text)
    roll = rng.random()
    if vp and roll < 0.75:
        text = rng.choice(VP_REFUSALS).format(vp=vp)
    elif roll < 0.95:
        group = request.group if request.unsafe else "general"
        text = rng.choice(TOPIC_REFUSALS).format(topic=TOPICS[group] if request.unsafe else "that")
    else:
        text = rng.choice(GENERIC_REFUSALS)
    tail = _tail(request, rng)
    return f"{text} {tail}" if tail else text


def _tail(request: _Request, rng: random.Random) -> str:
    """A safety note, an alternative or a hotline after a refusal: always for self-harm and abuse of children."""
    group = request.group if request.unsafe else "general"
    chance = 0.9 if group in ("self-harm", "minors") else 0.45
    return rng.choice(TAILS[group]) if rng.random() < chance else ""


def _clean_tweet(text: str) -> str:
    """Davidson's tweets without retweet markers, @handles and HTML entities: an answer does not carry them."""
    text = re.sub(r"(?:^|\s)(?:!+\s*)?(?:RT\s+)?@\w+:?", " ", text)
    return " ".join(text.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").split())


def _seed_texts(seed_sets: Path, rng: random.Random, config: AnswerPairsConfig) -> tuple[list[SeedRow], list[SeedRow]]:
    """Hateful or abusive texts (harmful from anyone) and HateCheck's benign look-alikes."""
    harmful: list[SeedRow] = []
    for name, share in HARMFUL_TEXTS.items():
        rows = [r for r in load_seed_set(seed_sets, name) if r.label == "unsafe"]
        if name == "davidson_hate_speech":
            rows = [r.model_copy(update={"text": _clean_tweet(r.text)}) for r in rows]
            rows = [r for r in rows if len(r.text.split()) >= 3]
        rng.shuffle(rows)
        harmful += rows[: round(config.harmful_texts * share)]
    benign = [
        r
        for r in load_seed_set(seed_sets, "hatecheck")
        if r.label == "safe" and r.meta.get("functionality") in _BENIGN_HATECHECK
    ]
    rng.shuffle(benign)
    return harmful, benign[: config.benign_texts]


def _real_answers(seed_sets: Path, rng: random.Random, n: int) -> Iterator[tuple[str, SeedRow, SeedRow]]:
    """(kind, answer, request) of real assistant texts: MTRAG answers after the question they answer, GPTeacher
    role-play replies after their prompt, DSTC9 replies (no question recorded) after another question of their
    domain."""
    mtrag = load_seed_set(seed_sets, "mtrag_conversations")
    by_id = {r.id: r for r in mtrag}
    pairs: list[tuple[str, SeedRow, SeedRow]] = []
    for row in mtrag:
        match = re.match(r"(.*)-input(\d+)$", row.id)
        if row.meta.get("role") == "assistant" and match:
            question = by_id.get(f"{match[1]}-input{int(match[2]) - 1:02d}")
            if question is not None and question.meta.get("role") == "user":
                pairs.append(("ordinary", row, question))
    prompts = {r.id: r for r in load_seed_set(seed_sets, "gpteacher_roleplay")}
    roleplay = [
        ("ordinary", r, prompts[r.meta["prompt_id"]])
        for r in load_seed_set(seed_sets, "gpteacher_roleplay_responses")
        if r.meta.get("prompt_id") in prompts
    ]
    dstc9 = load_seed_set(seed_sets, "dstc9_faq_dialogs")
    questions: dict[str, list[SeedRow]] = {}
    for r in dstc9:
        if r.meta.get("role") == "user":
            questions.setdefault(str(r.meta.get("domain")), []).append(r)
    replies = [
        ("offtopic", r, rng.choice(questions[str(r.meta.get("domain"))]))
        for r in dstc9
        if r.meta.get("role") == "assistant" and questions.get(str(r.meta.get("domain")))
    ]
    for group, share in ((pairs, 0.35), (roleplay, 0.3), (replies, 0.35)):
        rng.shuffle(group)
        yield from group[: round(n * share)]


def _refused(
    unsafe: dict[str, list[_Request]],
    safe: dict[str, list[_Request]],
    n: int,
    config: AnswerPairsConfig,
    rng: random.Random,
) -> list[_Request]:
    """Requests to refuse: unsafe ones, and benign ones for over-refusals."""
    over = round(n * config.over_refusal_share)
    return _draw(unsafe, UNSAFE_REFUSAL_REQUESTS, n - over, rng) + _draw(safe, SAFE_REQUESTS, over, rng)


def _plan(seed_sets: Path, config: AnswerPairsConfig, seed: int) -> tuple[list[_Job], list[dict[str, Any]]]:
    """The generation jobs and the rows that need no generation, both fixed by the seed sets and the seed."""
    rng = random.Random(f"{seed}-answers")
    unsafe_sets = sorted(set(UNSAFE_COMPLIANCE_REQUESTS) | set(UNSAFE_REFUSAL_REQUESTS))
    unsafe = {name: _requests(seed_sets, name, unsafe=True) for name in unsafe_sets}
    compliant = {
        name: _requests(seed_sets, name, unsafe=True, for_compliance=True) for name in UNSAFE_COMPLIANCE_REQUESTS
    }
    safe = {name: _requests(seed_sets, name, unsafe=False) for name in sorted(SAFE_REQUESTS)}
    plain = [req for name in PLAIN_REQUEST_SETS for req in safe[name]]
    hateful = [
        req
        for name in ("catqa", "strongreject", "coconot_noncompliance")
        for req in unsafe[name]
        if req.group == "hate"
    ]
    if not hateful or not plain:
        raise BuilderError(f"{seed_sets}: no hateful or no plain requests to pair the seed texts with")

    def job(kind: str, request: _Request) -> _Job:
        low, high = config.max_tokens
        compliance = kind == "compliance"
        return _Job(
            kind=kind,
            request=request,
            system=rng.choice(SYSTEM_PROMPTS),
            opener=rng.choice(COMPLIANCE_OPENERS if compliance else REFUSAL_OPENERS),
            max_tokens=rng.randint(low, high) if compliance else config.refusal_max_tokens,
            seed=rng.randrange(2**31),
            disclaimer=rng.choice(DISCLAIMERS) if compliance and rng.random() < config.disclaimer_share else "",
        )

    jobs = [job("compliance", r) for r in _draw(compliant, UNSAFE_COMPLIANCE_REQUESTS, config.unsafe_compliance, rng)]
    jobs += [job("compliance", r) for r in _draw(safe, SAFE_REQUESTS, config.safe_compliance, rng)]
    jobs += [job("refusal", r) for r in _refused(unsafe, safe, config.generated_refusals, config, rng)]

    rows: list[dict[str, Any]] = []
    for request in _refused(unsafe, safe, config.template_refusals, config, rng):
        rows.append(_row("refusal", _template_refusal(request, rng), request, "template"))
    harmful, benign = _seed_texts(seed_sets, rng, config)
    for kind, texts in (("harmful_text", harmful), ("benign_text", benign)):
        for text in texts:
            request = rng.choice(hateful if rng.random() < 0.5 else plain)
            rows.append(_row(kind, text.text, request, "seed", answer_source=text.source, answer_id=text.id))
    unsafe_requests = [r for name in unsafe_sets for r in unsafe[name]]
    for kind, answer, question in _real_answers(seed_sets, rng, config.real_answers):
        request = _Request(question.text, question.source, question.id, False, "general")
        if rng.random() < 0.1:  # an unrelated harmless answer to a harmful request is still harmless
            kind, request = "offtopic", rng.choice(unsafe_requests)
        rows.append(_row(kind, answer.text, request, "seed", answer_source=answer.source, answer_id=answer.id))
    return jobs, rows


def _row(
    kind: str,
    text: str,
    request: _Request,
    generator: str,
    *,
    answer_source: str | None = None,
    answer_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    harmful = kind == "harmful_text" or (kind == "compliance" and request.unsafe)
    return {
        "text": text,
        "context": request.text,
        "labels": [ANSWER_LABEL] if harmful else [],
        "source": answer_source or request.source,
        "context_source": request.source,
        "id": f"answer-{kind}-{generator}-{answer_id or request.id}",
        "kind": kind,
        "request_label": "unsafe" if request.unsafe else "safe",
        "generator": generator,
        **extra,
    }


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def build_answer_pairs(
    seed_sets: Path,
    out: Path,
    *,
    seed: int = 13,
    config: AnswerPairsConfig | None = None,
    work: Path | None = None,
    progress: bool = True,
    on_status: Callable[[str], None] | None = None,
) -> AnswerPairsReport:
    """Write the ``answer-safety`` training pairs to ``out`` (gzip-compressed when it ends with ``.gz``).

    Generations are appended to ``work`` (default: ``<out stem>-work/generations.jsonl`` beside ``out``) and
    reused on the next run, so a killed run continues where it stopped.
    """
    config = config or AnswerPairsConfig()
    if not seed_sets.is_dir():
        raise BuilderError(f"seed sets folder {seed_sets} does not exist (pass the shared/train folder)")
    stem = out.name.split(".")[0]
    work_file = _WorkFile((work or out.parent / f"{stem}-work") / "generations.jsonl")
    jobs, rows = _plan(seed_sets, config, seed)
    if on_status:
        on_status(f"{len(jobs)} generations ({sum(j.key not in work_file.done for j in jobs)} to do), {len(rows)} rows")
    _generate(jobs, work_file, config, progress)

    rng = random.Random(f"{seed}-assemble")
    dropped: Counter[str] = Counter()
    tokens, seconds = 0, 0.0
    for job in jobs:
        entry = work_file.done[job.key]
        tokens += int(entry["tokens"])
        seconds += float(entry["seconds"])
        if job.kind == "compliance":
            answer, why = _compliance(job, entry["text"])
        else:
            tail = _tail(job.request, rng) if rng.random() < 0.35 else ""
            answer, why = _refusal(job, entry["text"], rng.choice((1, 2)), tail)
        if answer is None:
            dropped[why] += 1
            continue
        extra: dict[str, Any] = (
            {"opener": job.opener, "disclaimer": bool(job.disclaimer)} if job.kind == "compliance" else {}
        )
        rows.append(_row(job.kind, answer, job.request, "smollm2", **extra))

    kept: dict[tuple[str, str], dict[str, Any]] = {}
    ids: Counter[str] = Counter()
    for row in rows:
        if rng.random() < config.answer_alone_share:
            row["context"] = ""
        key = (_key(row["context"]), _key(row["text"]))
        if key in kept:
            dropped["duplicate"] += 1
            continue
        ids[row["id"]] += 1
        if ids[row["id"]] > 1:
            row["id"] = f"{row['id']}-{ids[row['id']]}"
        kept[key] = row
    final = list(kept.values())
    rng.shuffle(final)
    for row in final:
        LabeledExample.model_validate(row)  # the training format, checked before anything is written
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in final).encode("utf-8")
    _write(out, gzip.compress(data, mtime=0) if out.name.endswith(".gz") else data)

    by_kind: dict[str, Counter[str]] = {}
    for row in final:
        by_kind.setdefault(row["kind"], Counter())[ANSWER_LABEL if row["labels"] else "none"] += 1
    return AnswerPairsReport(
        rows=len(final),
        positives=sum(bool(row["labels"]) for row in final),
        by_kind={kind: dict(sorted(counts.items())) for kind, counts in sorted(by_kind.items())},
        by_source=dict(Counter(row["source"] for row in final).most_common()),
        answer_alone=sum(not row["context"] for row in final),
        dropped=dict(dropped.most_common()),
        generated_tokens=tokens,
        generation_seconds=round(seconds, 1),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise CacheWriteError(f"cannot write {path}: {exc.strerror or exc}") from exc


def load_answer_pairs(path: Path = ANSWER_PAIRS_FILE) -> list[LabeledExample]:
    """The rows of a file ``build_answer_pairs`` wrote (``.jsonl`` or ``.jsonl.gz``)."""
    if not path.is_file():
        raise BuilderError(f"{path} does not exist: run guard-build pack-answers")
    raw = path.read_bytes()
    text = (gzip.decompress(raw) if path.name.endswith(".gz") else raw).decode("utf-8")
    return [LabeledExample.model_validate_json(line) for line in text.split("\n") if line]
