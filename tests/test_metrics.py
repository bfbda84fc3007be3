import pytest

from dlp.metrics import code_score, extract_code, french_share, score, squad_f1, two_skill_score


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
    ref = {"label": "B", "options": {"A": "the Moon", "B": "the Sun", "C": "Mars", "D": "a rock"}}
    assert score("science_qa", "B. the Sun", ref) == 1.0
    assert score("science_qa", "It is the Sun.", ref) == 1.0
    assert score("science_qa", "A. the Moon", ref) == 0.0
    assert score("science_qa", "La réponse est B.", ref) == 1.0
    assert score("translate_fr", "Je suis fatigué.", {"references": ["Je suis fatigué."]}) == pytest.approx(1.0)
    assert score("summarize", "we propose a new method", {"references": ["we propose a new method"]}) == pytest.approx(1.0)


def test_squad_f1_uses_the_official_normalization():
    assert squad_f1("The Eiffel Tower.", {"answers": ["Eiffel Tower"]}) == 1.0
    assert squad_f1("in July and August", {"answers": ["July, August, and September"]}) == pytest.approx(2 * (3 / 4) * (3 / 4) / 1.5)
    assert squad_f1("nothing", {"answers": ["Paris"]}) == 0.0
    assert score("reading_qa", "Paris\nbecause the text says so", {"answers": ["Paris"]}) == 1.0  # first line only


def test_french_share_tells_french_from_english():
    assert french_share("Le service était lent mais la nourriture est excellente.") > 0.5
    assert french_share("The service was slow but the food is excellent.") < 0.5
    assert french_share("") == 0.0


def test_two_skill_scores_both_skills():
    code = "```python\ndef solve():\n    return 36 - 5 * 4\n```"
    assert two_skill_score("code+math", code, {"answer": "16"}) == {"code": 1.0, "math": 1.0, "both": 1.0}
    assert two_skill_score("code+math", code, {"answer": "17"}) == {"code": 1.0, "math": 0.0, "both": 0.0}
    needs_args = "```python\ndef solve(a, b):\n    return a - b\n```"
    assert two_skill_score("code+math", needs_args, {"answer": "16"})["code"] == 0.0
    assert two_skill_score("code+math", "The answer is 16.", {"answer": "16"})["code"] == 0.0
    fr = "Négatif. Traduction : Je déteste attendre dans les longues files, c'est pas agréable."
    assert two_skill_score("translate_fr+sentiment", fr, {"label": "negative"}) == \
        {"sentiment": 1.0, "translate_fr": 1.0, "both": 1.0}
    assert two_skill_score("translate_fr+sentiment", "Positive.", {"label": "negative"})["both"] == 0.0
    ref = {"label": "B", "options": {"A": "Venus", "B": "Mercury"}}
    assert two_skill_score("science_qa+translate_fr", "B. Mercure est la planète la plus proche du soleil.", ref) == \
        {"science_qa": 1.0, "translate_fr": 1.0, "both": 1.0}
