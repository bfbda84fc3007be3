"""The reading tabs: the evaluation results and the method."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from dlp.charts import confusion_chart, results_chart, two_skill_chart

METHOD = r"""
### How DLP-LoRA works
1. **Sentence-level routing.** A mini-MLP router (~5M parameters, no language model inside) reads the whole
   prompt once and gives a probability for every loaded LoRA adapter, and for **base** (no adapter: the
   right answer for "hello" or "tell me a joke").
2. **Top-p selection.** Adapters are sorted by probability and the smallest set whose probabilities sum to at
   least *p* is kept (always at least one; *top-k* caps the count). A two-skill prompt ("write Python code
   that solves this word problem") splits the probability, so both adapters are kept.
3. **Fusion for the whole answer.** The kept probabilities are renormalized into weights *w*, and every adapted
   layer computes, for every generated token,

   $$y = W x + \sum_i w_i \,\frac{\alpha_i}{r_i}\, B_i A_i x$$

   *base* is a zero LoRA: kept beside adapters, its weight scales their contribution down.
   In this demo the base, single-adapter and fused answers are rows of **one batch**: each row carries its own
   mixture, so they stream side by side from a single forward pass per token.

4. **Other ways to fuse the same kept adapters** (the Compare tab's "second fused column"). One weight per
   adapter for the whole answer tends to hand a two-skill answer to one adapter, or blend both into neither.
   - *sum*: every kept adapter at weight 1 (LoRA arithmetic).
   - *layer-wise* ([LoRA Soups' CAT, arXiv 2410.13025](https://arxiv.org/abs/2410.13025)): one learned weight
     per layer and adapter, still fixed for the whole answer, so it costs what DLP costs.
   - *token gate* ([LoRA-Flow, arXiv 2402.11455](https://arxiv.org/abs/2402.11455)): a small linear gate in every
     layer reads the hidden state and re-weighs the kept adapters **at every token**, with the base model (no
     LoRA) as one more option; it learned from a few hundred composite examples. The router's top-p set still
     decides which adapters take part; the gate sets their mix.
   Both learned methods were trained on composite two-skill examples; the Results tab says what they achieved.
   In short: a gate can only choose between what the adapters write, so it combines two skills where the
   adapters can take turns. Taught to answer with the label first and the French after, it writes both halves
   for 72% of held-out reviews, where renorm and either adapter alone never do; a French summary, which needs
   both skills in the same words, stays out of its reach, and after a reading answer it goes on in French only
   a quarter of the time. Try the two-skill examples with the token gate as the
   second fused column, and open its panel to see the hand-over token by token.

5. **Adapters come and go one at a time** (Mixture-of-LoRAs). Add your own in the **Adapters** tab: the router
   learns it from a few example prompts, for your session only. The **Sweep** tab shows one answer at five
   mixtures between two adapters, which is where fusion's effect (and its limits at 135M) is easiest to see.

Papers: [DLP-LoRA (arXiv 2410.01497)](https://arxiv.org/abs/2410.01497) ·
[Mixture-of-LoRAs (arXiv 2403.03432)](https://arxiv.org/abs/2403.03432).
The *softmax* weighting option reproduces the original repository's code (a softmax over the kept
probabilities, which flattens the weights); *renorm* follows the paper's text.
"""


def results_tab(folder: Path, colors: dict[str, str]) -> None:
    results_file, table_file = folder / "results.json", folder / "results.md"
    if not results_file.is_file():
        gr.Markdown("No evaluation yet: run `python -m dlp eval` to create `assets/eval/results.json`.")
        return
    results = json.loads(results_file.read_text())
    findings = folder / "findings.md"  # the reading, written by hand after each eval: numbers do not explain themselves
    if findings.is_file():
        gr.Markdown(findings.read_text(encoding="utf-8"), elem_id="findings")
    gr.Markdown(table_file.read_text(encoding="utf-8") if table_file.is_file() else "", elem_classes="results-md")
    gr.Plot(results_chart(results), label="Held-out scores per task")
    if results.get("composite"):
        gr.Plot(two_skill_chart(results, colors), label="Two-skill prompts, skill by skill")
    confusion = folder.parent / "router" / "confusion.json"
    if confusion.is_file():
        data = json.loads(confusion.read_text())
        gr.Plot(confusion_chart(data["labels"], data["matrix"]), label="Router confusion on held-out prompts")


COST = """
6. **What it costs** (`python -m dlp bench` on {cpu}, {threads} threads): a second adapter fused costs
   {fused:.2f}x one adapter, because both adapters' small A/B matrices are concatenated into one LoRA per layer;
   three columns in one batch cost {compare:.2f}x one column and five {five:.2f}x, because decoding reads every
   weight once per step whatever the number of rows (on a CPU that takes a small compiled kernel,
   `dlp/row_gemm.py`: MKL's matmul read them at 5 rows about 1.6x as slowly as at one). The router takes {router:.2f} ms, building a request's
   fusion plan {setup:.1f} ms, and the token gate {token:.2f}x renorm per request. One lesson for anyone copying
   this on a CPU: PyTorch's OpenMP workers slow every op down when two threads of one process both run
   parallel work on few cores (here each token took ~1.8x as long), so the engine loads and decodes on one
   thread and visitors' runs take turns (`dlp/compute.py`).
"""


def method_tab(folder: Path | None = None) -> None:
    """The method, and what it costs on the machine of the last ``bench.json`` in ``folder`` (if any)."""
    text = METHOD
    path = folder / "bench.json" if folder else None
    bench = json.loads(path.read_text()) if path and path.is_file() else {}
    try:
        cost = COST.format(cpu=bench.get("gpu") or bench["cpu"], threads=bench["threads"],
                           fused=bench["fused_over_single"], compare=bench["compare_over_single"],
                           five=bench["five_over_single"], router=bench["router_ms_p50"],
                           setup=bench["fusion_setup_ms"], token=bench["method_over_renorm"]["token"])
        head, papers = METHOD.split("\nPapers:", 1)
        text = head + cost + "\nPapers:" + papers
    except (KeyError, TypeError, ValueError):
        pass  # no bench yet, or one from an older format: the method alone
    gr.Markdown(text, latex_delimiters=[{"left": "$$", "right": "$$", "display": True}])
