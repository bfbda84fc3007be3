"""Explanations: which words moved the router, what a column changed, which tokens the adapters wrote."""

import pytest

from dlp.explain import likeness, mixtures_between, token_gain, top_words, word_diff, word_occlusion


def test_occlusion_finds_the_word_that_moved_the_router():
    def probs_of(text):
        p = 0.9 if "python" in text.split() else 0.2
        return {"code": p, "base": 1 - p}

    scores = word_occlusion(probs_of, "please write python code", ["code"])
    assert [w for w, _, _ in scores] == ["please", "write", "python", "code"]
    by_word = {w: (s, a) for w, s, a in scores}
    assert by_word["python"] == (pytest.approx(0.7), "code")
    assert by_word["please"][0] == pytest.approx(0.0)
    assert top_words(scores) == [("python", pytest.approx(0.7), "code")]


def test_word_diff_marks_added_and_dropped_words():
    out = word_diff("the cat sat on the mat", "the dog sat on the mat today")
    assert ("cat ", "-") in out and ("dog ", "+") in out and ("today ", "+") in out
    assert "".join(t for t, label in out if label != "-").split() == "the dog sat on the mat today".split()
    assert word_diff("same words", "same words") == [("same words ", None)]


def test_token_gain_is_zero_for_base_and_moves_with_an_adapter(tiny_engine):
    text = "two three apples"
    flat = token_gain(tiny_engine, "what is the sum", text, {"base": 1.0})
    assert "".join(t for t, _ in flat).strip() == text
    assert all(abs(g) < 1e-4 for _, g in flat)
    moved = token_gain(tiny_engine, "what is the sum", text, {"alpha": 1.0})
    assert len(moved) == len(flat) and max(abs(g) for _, g in moved) > 1e-3


def test_sweep_mixtures_and_likeness():
    steps = mixtures_between("base", "alpha", 5)
    assert [w for w, _ in steps] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert steps[0][1] == {"base": 1.0} and steps[-1][1] == {"alpha": 1.0} and steps[2][1] == {"base": 0.5, "alpha": 0.5}
    assert likeness("le chat dort", "le chat dort") == 1.0 and likeness("", "") == 1.0
    assert likeness("le chat dort", "the cat sleeps") == 0.0
    assert 0 < likeness("le chat dort bien", "le chien dort bien") < 1


def test_the_gate_chart_gives_every_token_width_even_a_one_token_answer():
    from dlp.charts import gate_chart

    fig = gate_chart(["positive"], ["sentiment", "base"], [[0.75, 0.25]], {})
    assert [list(t.x) for t in fig.data] == [[0, 1], [0, 1]] and list(fig.data[0].y) == [0.75, 0.75]
    assert list(fig.layout.xaxis.tickvals) == [0.5] and list(fig.layout.xaxis.ticktext) == ["positive"]
