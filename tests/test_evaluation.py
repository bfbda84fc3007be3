"""``eval --phase score --merge``: re-scoring one task keeps every other row of results.json."""

import json
from types import SimpleNamespace

from dlp.evaluation import run

CONDS = ("base", "single", "fused", "uniform_merge")


def _row(i, item, cond, reply, label):
    return {"id": i, "section": "tasks", "name": "sentiment", "item": item, "condition": cond, "mixture": {},
            "prompt": "Is this positive? Great food.", "ref": {"label": label}, "top1": "sentiment",
            "selected": {"sentiment": 1.0}, "max_new_tokens": 6, "reply": reply, "strength": 0.5}


def test_score_merge_replaces_only_the_rescored_task(tmp_path):
    old_math = {"metric": "exact_match", "n": 100, "base": 0.01, "base_ci": [0, 0.03], "single": 0.02,
                "single_ci": [0, 0.05], "fused": 0.02, "fused_ci": [0, 0.05], "uniform_merge": 0.0,
                "uniform_merge_ci": [0, 0], "single_minus_base_ci95": [-0.02, 0.05], "router_top1": 1.0}
    (tmp_path / "results.json").write_text(json.dumps({"tasks": {"math": old_math}, "composite": {},
                                                       "note": "First run.", "top_p": 0.9}))
    (tmp_path / "samples.json").write_text(json.dumps([{"name": "math", "reply": "#### 3"}]))
    rows, i = [], 0
    for item, label in enumerate(("positive", "negative", "positive")):
        for cond in CONDS:
            rows.append(_row(i, item, cond, label if cond != "base" else "I think so", label))
            i += 1
    replies = tmp_path / "replies.jsonl"
    replies.write_text("\n".join(json.dumps(r) for r in [{"device": "cpu (torch.float32)", "top_p": 0.9}, *rows]))
    args = SimpleNamespace(out=str(tmp_path), replies=str(replies), phase="score", merge=True,
                           adapters=str(tmp_path / "cards"))
    assert run(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["tasks"]["math"] == old_math and results["composite"] == {}
    assert results["tasks"]["sentiment"]["single"] == 1.0 and results["tasks"]["sentiment"]["base"] == 0.0
    assert results["note"].startswith("First run.") and "Re-run later: sentiment" in results["note"]
    assert {s["name"] for s in json.loads((tmp_path / "samples.json").read_text())} == {"math", "sentiment"}
    assert results["tasks"]["sentiment"]["strength"] == 0.5 and "strength" not in results["tasks"]["math"]
    assert "| sentiment (strength 0.5) |" in (tmp_path / "results.md").read_text()


def test_two_skill_chart_draws_each_skill_in_its_adapters_colour():
    from dlp.charts import two_skill_chart

    cell = lambda a, b: {"sentiment": a, "sentiment_ci": [0, 1], "translate_fr": b, "translate_fr_ci": [0, 1],
                         "both": 0.0, "both_ci": [0, 0]}
    results = {"composite": {"translate_fr+sentiment": {"conditions": {
        "base": cell(0.1, 0.5), "single:sentiment": cell(0.97, 0.0), "fused": cell(0.8, 0.07)}}}}
    fig = two_skill_chart(results, {"sentiment": "#ff7f0e", "translate_fr": "#d62728"})
    bars = {t.name: t for t in fig.data}
    assert set(bars) == {"sentiment", "translate_fr", "both"}
    assert list(bars["sentiment"].y) == ["base", "sentiment alone", "DLP renorm"]
    assert list(bars["sentiment"].x) == [0.1, 0.97, 0.8] and list(bars["translate_fr"].x) == [0.5, 0.0, 0.07]
    assert bars["translate_fr"].marker.color == "#d62728" and list(bars["both"].x) == [0.0, 0.0, 0.0]
    results["composite"]["code+math"] = results["composite"]["translate_fr+sentiment"]
    assert len(two_skill_chart(results).layout.annotations) == 1, "a retired kind stays out of the chart"


def test_results_chart_draws_each_conditions_interval():
    from dlp.charts import results_chart

    row = {"base": 0.2, "base_ci": [0.1, 0.3], "single": 0.9, "single_ci": [0.85, 0.95], "fused": 0.9,
           "fused_ci": [0.85, 0.95], "uniform_merge": 0.5, "uniform_merge_ci": [0.4, 0.6]}
    fig = results_chart({"tasks": {"sentiment": row, "math": {**row, "base": 0.0, "base_ci": [0.0, 0.0]}}})
    base = next(t for t in fig.data if t.name == "base")
    assert list(base.y) == ["sentiment", "math"] and list(base.x) == [0.2, 0.0]
    assert [round(v, 6) for v in base.error_x.arrayminus] == [0.1, 0.0]
    assert [round(v, 6) for v in base.error_x.array] == [0.1, 0.0]


def test_score_merge_of_some_conditions_keeps_the_kinds_other_conditions(tmp_path):
    """Re-running one fusion method on a two-skill kind replaces that condition's cell only."""
    old_cell = {"sentiment": 0.5, "sentiment_ci": [0.4, 0.6], "translate_fr": 0.5, "translate_fr_ci": [0.4, 0.6],
                "both": 0.0, "both_ci": [0, 0]}
    kind = "translate_fr+sentiment"
    (tmp_path / "results.json").write_text(json.dumps({"tasks": {}, "note": "", "top_p": 0.9, "composite": {
        kind: {"n": 2, "conditions": {"fused": old_cell, "token": old_cell}}}}))
    rows = [{"id": i, "section": "two_skill", "name": kind, "item": i, "condition": "token", "prompt": "p",
             "reply": "negative\nLa soupe était froide.", "ref": {"label": "negative"}, "top1": "sentiment",
             "selected": {"sentiment": 0.5, "translate_fr": 0.5}} for i in range(2)]
    replies = tmp_path / "replies.jsonl"
    replies.write_text("\n".join(json.dumps(r) for r in [{"device": "cpu", "top_p": 0.9}, *rows]))
    args = SimpleNamespace(out=str(tmp_path), replies=str(replies), phase="score", merge=True,
                           adapters=str(tmp_path / "cards"))
    assert run(args) == 0
    cells = json.loads((tmp_path / "results.json").read_text())["composite"][kind]["conditions"]
    assert cells["fused"] == old_cell and cells["token"]["both"] == 1.0
