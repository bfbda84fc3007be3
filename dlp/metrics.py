"""Per-task scores in 0..1, each stated in ``METRICS``; standard implementations where one exists."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

METRICS = {
    "math": "exact_match (number after '####', else the last number)",
    "code": "pass@1 (MBPP asserts run in a subprocess, 10 s timeout)",
    "translate_fr": "chrF (sacrebleu, sentence level, best of the references) / 100",
    "sentiment": "accuracy (first of 'positive'/'negative' in the reply)",
    "science_qa": "accuracy (answer letter, or the option's text)",
    "summarize": "ROUGE-L F1 (rouge-score, stemmed, best of the references)",
    "reading_qa": "token F1 (SQuAD's official normalization: lower case, no punctuation or articles)",
}

_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _number(text: str) -> float | None:
    tail = text.rsplit("####", 1)[-1] if "####" in text else text
    found = _NUM.findall(tail)
    if not found:
        return None
    try:
        return float(found[0 if "####" in text else -1].replace(",", ""))
    except ValueError:
        return None


def math_score(reply: str, ref: dict) -> float:
    got = _number(reply)
    return float(got is not None and abs(got - float(ref["answer"])) < 1e-6)


def extract_code(reply: str) -> str:
    blocks = re.findall(r"```(?:python|py)?\s*\n(.*?)```", reply, flags=re.S)
    if blocks:
        return max(blocks, key=len)
    if "```" in reply:  # an unclosed block (the reply hit the token cap)
        return reply.split("```", 1)[1].split("\n", 1)[-1]
    return reply


def code_score(reply: str, ref: dict, timeout: float = 10.0) -> float:
    program = "\n".join([ref.get("setup", ""), extract_code(reply), *ref["tests"]])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "candidate.py")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(program)
        try:
            proc = subprocess.run([sys.executable, path], cwd=tmp, capture_output=True, timeout=timeout,
                                  env={"PATH": os.environ.get("PATH", "")})
        except subprocess.TimeoutExpired:
            return 0.0
    return float(proc.returncode == 0)


def chrf_score(reply: str, ref: dict) -> float:
    from sacrebleu.metrics import CHRF

    hyp = reply.strip().split("\n")[0]
    return max(CHRF().sentence_score(hyp, [r]).score for r in ref["references"]) / 100


def sentiment_score(reply: str, ref: dict) -> float:
    found = re.search(r"\b(positive|negative)\b", reply.lower())
    return float(bool(found) and found.group(1) == ref["label"])


def science_score(reply: str, ref: dict, options: dict[str, str] | None = None) -> float:
    text = reply.strip()
    m = re.match(r"^\(?([A-E1-5])[\.\):\s]", text + " ") or re.search(
        r"\b(?:answer|option|réponse)(?: is| est)?:?\s*\(?([A-E])\b", text, flags=re.I)
    if m:
        return float(m.group(1) == ref["label"])
    for label, option in (options or {}).items():
        if option and option.lower() in text.lower():
            return float(label == ref["label"])
    return 0.0


def rouge_l(reply: str, ref: dict) -> float:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return max(scorer.score(r, reply.strip())["rougeL"].fmeasure for r in ref["references"])


def _squad_tokens(text: str) -> list[str]:
    import string

    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return re.sub(r"\b(a|an|the)\b", " ", text).split()


def squad_f1(reply: str, ref: dict) -> float:
    """SQuAD v1.1's token F1 against the best reference (first line of the reply)."""
    from collections import Counter

    lines = reply.strip().split("\n")
    pred = _squad_tokens(lines[0] if lines else "")
    best = 0.0
    for answer in ref["answers"]:
        gold = _squad_tokens(answer)
        common = sum((Counter(pred) & Counter(gold)).values())
        if common:
            p, r = common / len(pred), common / len(gold)
            best = max(best, 2 * p * r / (p + r))
    return best


def score(task: str, reply: str, ref: dict, prompt: str = "") -> float:
    if task == "science_qa":
        return science_score(reply, ref, ref.get("options"))
    return {"math": math_score, "code": code_score, "translate_fr": chrf_score, "sentiment": sentiment_score,
            "summarize": rouge_l, "reading_qa": squad_f1}[task](reply, ref)


# --- two-skill prompts: each kind scored on both skills (0/1 each), plus "both" --------------------
TWO_SKILL_METRICS = {
    "code+math": "code: a Python function with no required arguments runs; math: it returns the GSM8K answer",
    "translate_fr+sentiment": "sentiment: the right label (English or French word); translate_fr: the reply is mostly French",
    "science_qa+translate_fr": "science_qa: the right option; translate_fr: the reply is mostly French",
    "summarize+translate_fr": ("summarize: a 5-60 word summary with chrF >= 0.35 against the English TL;DRs or the "
                               "composed French one; translate_fr: the reply is mostly French"),
    "reading_qa+translate_fr": ("reading_qa: token F1 >= 0.5 against the gold answer or its composed French (lead-in "
                                "'la réponse est' dropped); translate_fr: the reply is mostly French"),
}
SUMMARY_CHRF = 0.35  # fixed before any learned method was scored; a paraphrase scores ~0.4-0.6
_LEAD_IN = re.compile(r"^\W*(?:la\s+)?(?:bonne\s+)?réponse\s*(?:est|:)?\s*:?\s*|^\W*(?:the\s+)?answer\s*(?:is|:)\s*",
                      flags=re.I)


def answer_part(text: str) -> str:
    """The first line of a reply without a lead-in such as "La réponse est"."""
    lines = text.strip().split("\n")
    return _LEAD_IN.sub("", lines[0] if lines else "").strip()

_FR = set("le la les un une des du de et est sont pas je tu il elle nous vous ils elles ce cette ces que qui dans "
          "pour sur avec mais très était été avoir être au aux son sa ses leur mon ma mes ne plus bien c'est j'ai "
          "réponse parce car donc ou où".split())
_EN = set("the a an and is are was were not i you he she we they this that these those which who in for on with "
          "but very be have has had to of it its my your their answer because so or".split())


def french_share(text: str) -> float:
    """French function words over French + English ones: > 0.5 means the reply is mostly French."""
    words = re.findall(r"[a-zà-ÿ']+", text.lower())
    fr = sum(w in _FR for w in words)
    en = sum(w in _EN for w in words)
    return fr / (fr + en) if fr + en else 0.0


_CALL_HARNESS = """
import inspect, json, sys
ns = {}
exec(compile(open(sys.argv[1]).read(), "candidate", "exec"), ns)
funcs = [f for f in ns.values() if inspect.isfunction(f) and f.__code__.co_filename == "candidate"
         and all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                 for p in inspect.signature(f).parameters.values())]
if not funcs:
    sys.exit(3)
print(json.dumps(repr(funcs[-1]())))
"""


def run_function(code: str, timeout: float = 10.0) -> str | None:
    """The repr of what the last no-argument function in ``code`` returns, or None if none runs."""
    with tempfile.TemporaryDirectory() as tmp:
        cand, harness = os.path.join(tmp, "candidate.py"), os.path.join(tmp, "harness.py")
        with open(cand, "w", encoding="utf-8") as fh:
            fh.write(code)
        with open(harness, "w", encoding="utf-8") as fh:
            fh.write(_CALL_HARNESS)
        try:
            proc = subprocess.run([sys.executable, harness, cand], cwd=tmp, capture_output=True, timeout=timeout,
                                  env={"PATH": os.environ.get("PATH", "")}, text=True)
        except subprocess.TimeoutExpired:
            return None
    if proc.returncode != 0:
        return None
    try:
        import json

        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def _label(reply: str) -> str | None:
    found = re.search(r"\b(positive|negative|positif|positifs|négatif|negatif|négative|negative)\b", reply.lower())
    if not found:
        return None
    return "positive" if found.group(1).startswith("posit") else "negative"


def two_skill_score(kind: str, reply: str, ref: dict) -> dict[str, float]:
    if kind == "code+math":
        result = run_function(extract_code(reply))
        runs = result is not None
        got = _number(result) if runs else None
        right = got is not None and abs(got - float(ref["answer"])) < 1e-6
        return {"code": float(runs), "math": float(right), "both": float(runs and right)}
    french = float(french_share(reply) > 0.5)
    if kind == "translate_fr+sentiment":
        label = float(_label(reply) == ref["label"])
        return {"sentiment": label, "translate_fr": french, "both": label * french}
    if kind == "science_qa+translate_fr":
        right = science_score(reply, ref, ref.get("options"))
        return {"science_qa": right, "translate_fr": french, "both": right * french}
    if kind == "summarize+translate_fr":
        first = reply.strip().split("\n\n")[0]
        refs = list(ref["references"]) + ([ref["french"]] if ref.get("french") else [])
        n_words = len(first.split())
        right = float(5 <= n_words <= 60 and chrf_score(first.replace("\n", " "), {"references": refs}) >= SUMMARY_CHRF)
        return {"summarize": right, "translate_fr": french, "both": right * french}
    if kind == "reading_qa+translate_fr":
        answers = list(ref["answers"]) + ([answer_part(ref["french"])] if ref.get("french") else [])
        right = float(squad_f1(answer_part(reply), {"answers": answers}) >= 0.5)
        return {"reading_qa": right, "translate_fr": french, "both": right * french}
    raise KeyError(f"no scorer for two-skill kind '{kind}'")
