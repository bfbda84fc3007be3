"""init-router: a stack with no task data gets a router from its adapters' example prompts, served by the app."""

import json
import shutil

import pytest

import tiny
from dlp.errors import DLPError
from dlp.manifest import load_manifest
from dlp.router_init import adapter_examples, init_router

KINDS = {"alpha": ["how many apples are left after {n}", "what is {n} plus two", "sum of {n} and three apples",
                   "count the apples: {n}", "apples left if I eat {n}"],
         "beta": ["translate the food review {n}", "review of the food was good {n}", "the food review says {n}",
                  "food review please {n}", "translate this review {n}"],
         "gamma": ["write python code for {n}", "python code to sum {n}", "code a function for {n}",
                   "write code that prints {n}", "python function {n}"]}


def _stack(root, n_examples=12):
    path = tiny.build(root)
    data = json.loads(path.read_text())
    shutil.rmtree(root / "router")
    for a in data["adapters"]:
        rows = [{"prompt": t.format(n=k)} for k in range(n_examples) for t in KINDS[a["name"]]][:n_examples]
        (root / f"{a['name']}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        a["examples_file"] = f"{a['name']}.jsonl"
    path.write_text(json.dumps(data))
    return path


def test_too_few_examples_name_the_adapter(tmp_path):
    manifest = load_manifest(_stack(tmp_path, n_examples=4))
    with pytest.raises(DLPError, match="alpha .*beta .*gamma"):
        adapter_examples(manifest)


def test_init_router_then_route_and_compare_through_the_app(tmp_path):
    from gradio_client import Client

    import app

    path = _stack(tmp_path)
    stats = init_router(load_manifest(path), progress=False)
    assert stats["labels"] == ["base", "alpha", "beta", "gamma"] and stats["examples_top1"] >= 0.9
    assert (tmp_path / "router" / "replay.jsonl").is_file(), "add-adapter can teach it later"
    from dlp.engine import Engine

    engine = Engine(load_manifest(path))
    route = engine.route("python code to sum 40", top_p=0.5)
    assert max(route.probs, key=route.probs.get) == "gamma"
    demo = app.build_demo(engine)
    demo.queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, css=app.CSS)
    try:
        client = Client(url, verbose=False)
        chart, weights = client.predict("translate the food review 99", 0.5, 0, "renorm", api_name="/route")
        assert "beta" in weights
        result = client.predict("how many apples are left after 30", 0.8, 0, "renorm", 0.0, 6, 0, 1,
                                api_name="/compare")
        assert "tok/s" in result[3]
    finally:
        demo.close()
