"""Composite two-skill examples: answers in one fixed format, scored on both skills, train and eval apart."""

import pytest

from dlp.composite import EVAL_KINDS, two_skill_prompts
from dlp.composite_answers import compose, english_to_translate, separator
from dlp.metrics import two_skill_score
from dlp.tasks import data_dir

needs_data = pytest.mark.skipif(not (data_dir() / "sentiment_uci").is_dir(), reason="../shared/datasets not here")


def test_composed_answers_score_right_on_both_skills():
    ref = {"label": "negative", "text": "The soup was cold."}
    answer = compose("translate_fr+sentiment", "La soupe était froide.\nextra line", ref)
    assert answer == "negative\nLa soupe était froide.", "the short half first, each half as its adapter writes it"
    assert two_skill_score("translate_fr+sentiment", answer, ref)["both"] == 1.0
    assert two_skill_score("translate_fr+sentiment", "negative", ref)["both"] == 0.0

    summ = {"references": ["We train a small model that matches a large one."]}
    french = compose("summarize+translate_fr", "Nous entraînons un petit modèle qui égale un grand modèle.", summ)
    assert two_skill_score("summarize+translate_fr", french, {**summ, "french": french}) == \
        {"summarize": 1.0, "translate_fr": 1.0, "both": 1.0}
    assert two_skill_score("summarize+translate_fr", summ["references"][0], {**summ, "french": french}) == \
        {"summarize": 1.0, "translate_fr": 0.0, "both": 0.0}, "English: the summary is right, the language is not"
    assert two_skill_score("summarize+translate_fr", "Le chat est sur la table et le chien dort.",
                           {**summ, "french": french})["summarize"] == 0.0, "French, but not this abstract's summary"

    qa = {"answers": ["Denver Broncos"]}
    assert english_to_translate("reading_qa+translate_fr", qa) == "The answer is Denver Broncos."
    composed = compose("reading_qa+translate_fr", "Le dernier est les Broncos de Denver.", qa)
    assert composed == "Denver Broncos\nLa réponse est les Broncos de Denver."
    assert two_skill_score("reading_qa+translate_fr", composed, qa)["both"] == 1.0
    french = "La réponse est les Broncos de Denver."
    assert two_skill_score("reading_qa+translate_fr", french, {**qa, "french": french})["both"] == 1.0
    assert two_skill_score("reading_qa+translate_fr", "Denver Broncos", {**qa, "french": french}) == \
        {"reading_qa": 1.0, "translate_fr": 0.0, "both": 0.0}
    assert two_skill_score("reading_qa+translate_fr", "La réponse est Paris.", {**qa, "french": french}) == \
        {"reading_qa": 0.0, "translate_fr": 1.0, "both": 0.0}


def test_half_the_training_answers_break_with_a_blank_line_and_score_the_same():
    prompts = [f"Translate review {i} into French and label it." for i in range(400)]
    seps = [separator(p, "train") for p in prompts]
    assert set(seps) == {"\n", "\n\n"} and 150 < seps.count("\n\n") < 250
    assert seps == [separator(p, "train") for p in prompts], "stable across runs"
    assert {separator(p, "test") for p in prompts} == {"\n"}, "the scorer's references keep one format"
    ref = {"label": "negative", "text": "The soup was cold."}
    answer = compose("translate_fr+sentiment", "La soupe était froide.", ref, "\n\n")
    assert answer == "negative\n\nLa soupe était froide."
    assert two_skill_score("translate_fr+sentiment", answer, ref)["both"] == 1.0
    qa = {"answers": ["Denver Broncos"]}
    assert two_skill_score("reading_qa+translate_fr", compose("reading_qa+translate_fr", "Le dernier est X.", qa, "\n\n"),
                           qa)["both"] == 1.0


@needs_data
@pytest.mark.parametrize("kind", EVAL_KINDS)
def test_training_and_eval_items_are_disjoint(kind):
    train = {i.ref["x"] for i in two_skill_prompts(kind, "train")}
    test = [i.ref["x"] for i in two_skill_prompts(kind, "test", limit=60)]
    assert len(test) == 60 and not train & set(test)
