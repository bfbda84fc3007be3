"""The launched app through gradio_client, as a remote caller sees it."""

import concurrent.futures as cf
import json
import re

import pytest

PROMPTS = ["what is two and three", "translate the food review", "write python code for a sum", "the cat is good",
           "how many apples", "summary of this paper please", "is the movie bad or great", "why is the sun light"]


def _compare(client, prompt, n_single=1, max_new_tokens=8):
    return client.predict(prompt, 0.8, 0, "renorm", 0.0, max_new_tokens, 0, n_single, api_name="/compare")


def _value(x):
    return x["value"] if isinstance(x, dict) else x


def _texts(result):
    # API outputs: chart, weights, base, t_base, (single, t_single) x 3, fused, t_fused, second fused, its timing,
    # table, timing chart
    return _value(result[2]), _value(result[4]), _value(result[10])


def test_compare_streams_three_columns(tiny_app_url):
    from gradio_client import Client

    client = Client(tiny_app_url, verbose=False)
    job = client.submit(PROMPTS[0], 0.8, 0, "renorm", 0.0, 8, 0, 1, api_name="/compare")
    updates = list(job)
    assert len(updates) >= 2, "outputs should stream"
    base, single, fused = _texts(job.result())
    assert base and single and fused
    result = job.result()
    assert "tok/s" in result[3] and "router ms" in result[-2]
    assert result[0]["type"] == "plotly" and result[-1]["type"] == "plotly"
    assert _value(result[12]) == "", "no second fused column unless a fusion method is picked"
    again = client.submit(PROMPTS[1], 0.8, 0, "renorm", 0.0, 8, 0, 1, api_name="/compare")
    assert list(again)[0][-1] is None, "the last run's timing chart must go when a new run starts"


def test_second_fused_column_by_method(tiny_app_url):
    from gradio_client import Client

    client = Client(tiny_app_url, verbose=False)
    result = client.predict(PROMPTS[1], 1.0, 0, "renorm", 0.0, 8, 0, 1, "sum", api_name="/compare")
    assert _value(result[12]) and "sum" in result[-2], "the sum column streams beside DLP's"
    with pytest.raises(Exception, match="token"):  # not trained on this stack: not a choice
        client.predict(PROMPTS[1], 1.0, 0, "renorm", 0.0, 8, 0, 1, "token", api_name="/compare")


def test_route_endpoint(tiny_app_url):
    from gradio_client import Client

    chart, weights = Client(tiny_app_url, verbose=False).predict(PROMPTS[1], 0.5, 0, "renorm", api_name="/route")
    assert chart is not None and "Fusion weights" in weights


def test_bad_input_is_a_message_not_a_trace(tiny_app_url):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(tiny_app_url, verbose=False)
    with pytest.raises(AppError, match="prompt is empty"):
        _compare(client, "   ")
    with pytest.raises(AppError, match="limit is 64"):
        _compare(client, "two " * 300)
    with pytest.raises(AppError, match="max new tokens|less than minimum"):
        _compare(client, PROMPTS[0], max_new_tokens=0)
    assert _texts(_compare(client, PROMPTS[0]))[0], "the app keeps working after bad input"


def test_eight_concurrent_sessions_match_serial_results(tiny_app_url):
    from gradio_client import Client

    serial = [_texts(_compare(Client(tiny_app_url, verbose=False), p)) for p in PROMPTS]

    def one(prompt):
        return _texts(_compare(Client(tiny_app_url, verbose=False), prompt))

    with cf.ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(one, PROMPTS))
    assert concurrent == serial
    assert len(set(serial)) > 1


def test_manual_mix(tiny_app_url):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(tiny_app_url, verbose=False)
    # sliders: base (no adapter), the adapters, then three slots for the visitor's own adapters
    base, _, mixed, _ = client.predict(PROMPTS[2], 0.0, 8, 0, 0.0, 0.5, 0.0, 0.5, 0, 0, 0, api_name="/manual")
    assert base and mixed
    only_base, _, same, _ = client.predict(PROMPTS[2], 0.0, 8, 0, 1.0, 0.0, 0.0, 0.0, 0, 0, 0, api_name="/manual")
    assert _value(same) == _value(only_base)  # all weight on "base": the base model's answer
    with pytest.raises(AppError, match="All weights are 0"):
        client.predict(PROMPTS[2], 0.0, 8, 0, 0, 0, 0, 0, 0, 0, 0, api_name="/manual")


NEW = ["please write python code for the list", "python function code for a list please",
       "write code in python that sums a list", "python code to write a function", "a python function for this list",
       "code a python list function"]


def test_an_uploaded_adapter_is_one_sessions_own(tiny_app_url, tiny_engine, tmp_path):
    """Session A uploads an adapter: A routes to it and mixes it; B never sees it; A closing frees it."""
    import time

    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    import tiny

    tiny.make_adapter(tiny.make_model(tiny.make_tokenizer()), tmp_path / "mine", seed=42, targets=("q_proj", "v_proj"))
    files = [handle_file(str(tmp_path / "mine" / f)) for f in ("adapter_config.json", "adapter_model.safetensors")]
    a, b = Client(tiny_app_url, verbose=False), Client(tiny_app_url, verbose=False)

    def weights(client):  # the weights table, without the router's timing
        return re.sub(r"router [0-9.]+ ms", "", client.predict("write python code for a list", 1.0, 0, "renorm",
                                                                api_name="/route")[1])

    before = weights(b)
    status, table, *_ = a.predict(files, "", "mine", "\n".join(NEW), False, api_name="/add_adapter")
    assert "Added **mine**" in status, status
    assert any(row[0] == "mine" for row in table["data"])
    assert tiny_engine.visitors.count == 1
    assert "mine" in weights(a)
    assert weights(b) == before
    # A's Manual mix: the first slot is "mine"; all weight on it differs from the base model
    base, _, mixed, _ = a.predict(PROMPTS[2], 0.0, 8, 0, 0, 0, 0, 0, 1.0, 0, 0, api_name="/manual")
    assert _value(mixed) != _value(base)
    with pytest.raises(AppError, match="All weights are 0"):  # B has no slot adapter: the slot weight is ignored
        b.predict(PROMPTS[2], 0.0, 8, 0, 0, 0, 0, 0, 1.0, 0, 0, api_name="/manual")
    status, *_ = b.predict(files, "", "mine", "one\ntwo", False, api_name="/add_adapter")
    assert "at least 5" in status and tiny_engine.visitors.count == 1  # refused, nothing half-loaded
    status, *_ = b.predict([], "nobody/no-such-lora", "hubbed", "\n".join(NEW), False, api_name="/add_adapter")
    assert "Could not fetch" in status and tiny_engine.visitors.count == 1  # offline here: a message, not a trace
    a.close()  # the session ends: Gradio's unload drops its adapter and its router
    deadline = time.time() + 30
    while tiny_engine.visitors.count and time.time() < deadline:
        time.sleep(0.2)
    assert tiny_engine.visitors.count == 0


def test_sweep_runs_five_mixtures_in_one_batch(tiny_app_url):
    """base -> alpha: the first row is the base model's answer, the last alpha's alone, and a chart compares them."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(tiny_app_url, verbose=False)
    *boxes, timing, chart = client.predict(PROMPTS[2], "base", "alpha", 0.0, 8, 0, api_name="/sweep")
    texts = [_value(b) for b in boxes]
    assert len(texts) == 5 and all(texts) and texts[0] != texts[-1]
    base, _, alpha, _ = client.predict(PROMPTS[2], 0.0, 8, 0, 0, 1.0, 0, 0, 0, 0, 0, api_name="/manual")
    assert texts[0] == _value(base) and texts[-1] == _value(alpha)
    assert chart["type"] == "plotly" and "one batch" in timing
    with pytest.raises(AppError, match="two different ends"):
        client.predict(PROMPTS[2], "alpha", "alpha", 0.0, 8, 0, api_name="/sweep")


def test_a_one_token_answer_shows_no_decode_rate():
    from ui.common import timing_line, timing_table

    one = {"ttft_ms": 560.0, "tokens_per_s": 0.0, "tokens": 1, "total_ms": 570.0, "router_ms": 1.0, "setup_ms": 2.0,
           "prefill_ms": 500.0}
    assert "– tok/s · 1 token ·" in timing_line(one)
    assert "| – | 1 |" in timing_table([{"label": "sentiment only", "timing": one}])
    assert "6.5 tok/s · 12 tokens" in timing_line({**one, "tokens": 12, "tokens_per_s": 6.5})


def test_a_runaway_column_ends_marked_repeating(tiny_app_url):
    """The tiny model repeats one token forever: the loop guard ends every column at 32 tokens and says so;
    switched off, the columns decode to the cap."""
    from gradio_client import Client

    client = Client(tiny_app_url, verbose=False)
    guarded = client.predict(PROMPTS[0], 0.8, 0, "renorm", 0.0, 64, 0, 1, "renorm", True, api_name="/compare")
    assert "(stopped: repeating)" in guarded[3] and "64 tokens" not in guarded[3]
    free = client.predict(PROMPTS[0], 0.8, 0, "renorm", 0.0, 64, 0, 1, "renorm", False, api_name="/compare")
    assert "repeating" not in free[3] and "64 tokens" in free[3]


def test_single_columns_for_chosen_adapters(tiny_app_url):
    """A comparer names the adapters that get single columns, kept by the router or not."""
    from gradio_client import Client

    client = Client(tiny_app_url, verbose=False)
    result = client.predict(PROMPTS[0], 0.8, 0, "renorm", 0.0, 8, 0, 1, "renorm", True, ["gamma", "beta"],
                            api_name="/compare")
    labels = [result[i]["label"] for i in (4, 6) if isinstance(result[i], dict)]
    assert len(labels) == 2 and labels[0].startswith("gamma only") and labels[1].startswith("beta only"), labels


def test_batch_of_five_prompts_with_a_csv(tiny_app_url, tmp_path):
    from gradio_client import Client, handle_file

    lines = [json.dumps({"prompt": p, "expected": "zzz-never"}) for p in PROMPTS[:5]]
    path = tmp_path / "five.jsonl"
    path.write_text("\n".join(lines))
    client = Client(tiny_app_url, verbose=False)
    table, summary, csv_file, jsonl_file = client.predict("", handle_file(str(path)), 0.0, 6, 0, True,
                                                          api_name="/batch")
    rows = table["data"] if isinstance(table, dict) else table
    assert len(rows) == 5 and "5 of 5 prompts answered" in summary and "0/5 right" in summary
    csv_text = open(csv_file["value"] if isinstance(csv_file, dict) else csv_file, encoding="utf-8").read()
    assert csv_text.count("\n") == 6 and csv_text.startswith("prompt,expected,route")


def test_manual_mix_exports_a_peft_zip(tiny_app_url):
    import zipfile

    from gradio_client import Client

    client = Client(tiny_app_url, verbose=False)
    result = client.predict(0.0, 0.5, 0.5, 0.0, 0, 0, 0, api_name="/export_mix")
    path = result["value"] if isinstance(result, dict) else result
    names = zipfile.ZipFile(path).namelist()
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(names)
