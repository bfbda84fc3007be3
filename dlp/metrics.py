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
    m = re.match(r"^\(?([A-E1-5])[\.\):\s]", text + " ") or re.search(r"\b(?:answer|option)(?: is)?:?\s*\(?([A-E])\b", text)
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


def score(task: str, reply: str, ref: dict, prompt: str = "") -> float:
    if task == "science_qa":
        options = dict(re.findall(r"^([A-E])\. (.+)$", prompt, flags=re.M))
        return science_score(reply, ref, options)
    return {"math": math_score, "code": code_score, "translate_fr": chrf_score, "sentiment": sentiment_score,
            "summarize": rouge_l}[task](reply, ref)
