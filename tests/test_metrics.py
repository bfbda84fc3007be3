import pytest

from dlp.metrics import code_score, extract_code, score


def test_math_exact_match():
    assert score("math", "She has 3 + 4 = 7 apples.\n#### 7", {"answer": "7"}) == 1.0
    assert score("math", "#### 1,250", {"answer": "1250"}) == 1.0
    assert score("math", "It is 7 and then 8", {"answer": "7"}) == 0.0  # the last number counts
    assert score("math", "so 12 apples", {"answer": "12"}) == 1.0  # no '####': the last number


def test_code_runs_the_asserts():
    ref = {"tests": ["assert add(2, 3) == 5"], "setup": ""}
    assert code_score("```python\ndef add(a, b):\n    return a + b\n```", ref) == 1.0
    assert code_score("```python\ndef add(a, b):\n    return a - b\n```", ref) == 0.0
    assert code_score("```python\nwhile True: pass\n```", ref, timeout=1) == 0.0
    assert extract_code("text\n```python\nx = 1\n") == "x = 1\n"


def test_sentiment_science_translate_summarize():
    assert score("sentiment", "Positive.", {"label": "positive"}) == 1.0
    assert score("sentiment", "negative", {"label": "positive"}) == 0.0
    prompt = "Which is a star?\nA. the Moon\nB. the Sun\nC. Mars\nD. a rock"
    assert score("science_qa", "B. the Sun", {"label": "B"}, prompt) == 1.0
    assert score("science_qa", "It is the Sun.", {"label": "B"}, prompt) == 1.0
    assert score("science_qa", "A. the Moon", {"label": "B"}, prompt) == 0.0
    assert score("translate_fr", "Je suis fatigué.", {"references": ["Je suis fatigué."]}) == pytest.approx(1.0)
    assert score("summarize", "we propose a new method", {"references": ["we propose a new method"]}) == pytest.approx(1.0)
