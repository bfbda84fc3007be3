"""Plotly figures from plain results (dicts and dataclasses); no gradio import, no model access."""

from __future__ import annotations

import plotly.graph_objects as go

_FONT = dict(family="Inter, system-ui, sans-serif", size=13)
BASE_COLOR = "#9e9e9e"  # the "base" pseudo-adapter (no adapter) is grey in every chart


def _legend_below(fig: go.Figure, height: int, bottom: int) -> go.Figure:
    """A horizontal legend under the last axis title: on a phone it wraps onto lines that cover no bars."""
    return fig.update_layout(legend=dict(orientation="h", y=-64 / height, yanchor="top", x=0, xanchor="left"),
                             margin=dict(b=bottom))


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0.01, font=dict(size=15)), height=height, font=_FONT,
                      margin=dict(l=10, r=10, t=48, b=10), plot_bgcolor="white", paper_bgcolor="white",
                      legend=dict(orientation="h", y=-0.18))
    return fig


def router_chart(probs: dict[str, float], selected: dict[str, float], colors: dict[str, str],
                 top_p: float) -> go.Figure:
    """Sorted probabilities as horizontal bars (labels stay readable on a phone), each in its adapter's
    colour; kept adapters solid and labelled with their fusion weight, the rest faded. The cumulative
    probability and the top-p cut sit in a narrow panel of their own, so the line never crosses a label."""
    from plotly.subplots import make_subplots

    names = sorted(probs, key=lambda n: -probs[n])
    values = [probs[n] for n in names]
    cumulative = [sum(values[: i + 1]) for i in range(len(values))]
    labels = [("base (no adapter)" if n == "base" else n) for n in names]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, column_widths=[0.72, 0.28], horizontal_spacing=0.03)
    fig.add_bar(
        y=labels, x=values, orientation="h", name="router probability",
        marker=dict(color=[colors.get(n, BASE_COLOR if n == "base" else "#888888") for n in names],
                    opacity=[1.0 if n in selected else 0.28 for n in names],
                    line=dict(color=["#111" if n in selected else "rgba(0,0,0,0)" for n in names], width=2)),
        text=[f"p={probs[n]:.2f} · <b>w={selected[n]:.2f}</b>" if n in selected else f"{probs[n]:.2f}" for n in names],
        textposition=["inside" if probs[n] > 0.4 else "outside" for n in names], insidetextanchor="start",
        cliponaxis=False, hovertemplate="%{y}: p=%{x:.3f}<extra></extra>", row=1, col=1,
    )
    fig.add_scatter(y=labels, x=cumulative, mode="lines+markers", name="cumulative p", row=1, col=2,
                    line=dict(color="#555", dash="dot"), hovertemplate="cumulative %{x:.3f}<extra></extra>")
    fig.add_vline(x=top_p, line=dict(color="#c0392b", dash="dash"), row=1, col=2,
                  annotation_text=f"top-p {top_p:.2f}", annotation_position="bottom left",
                  annotation_font=dict(size=11, color="#c0392b"))
    fig.update_xaxes(range=[0, 1.3], gridcolor="#eee", tickvals=[0, 0.5, 1], row=1, col=1)  # a phone fits 3
    fig.update_xaxes(range=[0, 1.04], gridcolor="#eee", tickvals=[0, 0.5, 1], row=1, col=2,
                     title=dict(text="cumulative", font=dict(size=11)))
    fig.update_yaxes(autorange="reversed", automargin=True)
    kept = [n for n in selected]
    shown = ", ".join(kept[:3]) + (f" +{len(kept) - 3} more" if len(kept) > 3 else "")
    fig = _layout(fig, f"Router: kept {len(kept)} of {len(names)}<br><span style='font-size:12px;color:#555'>"
                       f"{shown or 'none'}</span>", 150 + 30 * len(names))  # two short lines: fit a phone
    fig.update_layout(legend=dict(orientation="h", y=-0.16, yanchor="top", x=0), margin=dict(t=66))
    fig.update_traces(textfont=dict(size=11), selector=dict(type="bar"))
    return fig


def timing_chart(columns: list[dict], bench_ratio: float | None = None) -> go.Figure:
    """Stacked horizontal bars per column: router, fusion set-up, prefill, decode (ms). The columns share
    one batched pass, so their decode rates match; ``bench_ratio`` is the benchmark's fused/single."""
    labels = [c["label"] if len(c["label"]) <= 28 else c["label"][:27] + "…" for c in columns]
    parts = [("router_ms", "router", "#9467bd"), ("setup_ms", "fusion set-up", "#e377c2"),
             ("prefill_ms", "prefill", "#ff7f0e"), ("decode_ms", "decode", "#1f77b4")]
    fig = go.Figure()
    for key, name, color in parts:
        fig.add_bar(y=labels, x=[c["timing"].get(key, 0.0) for c in columns], name=name, orientation="h",
                    marker_color=color, hovertemplate=f"{name}: %{{x:.1f}} ms<extra></extra>")
    fig.update_layout(barmode="stack")
    fig.update_xaxes(gridcolor="#eee", ticksuffix=" ms", nticks=4)  # few ticks: a phone fits them
    fig.update_yaxes(autorange="reversed", automargin=True)
    ratio = f" · fused/single {bench_ratio:.2f}x (bench)" if bench_ratio else ""
    height = 150 + 34 * len(columns)  # every column's label, however many
    fig = _layout(fig, f"Where the time goes<br><span style='font-size:12px;color:#555'>one batched pass{ratio}"
                       f"</span>", height)  # two short lines: fit a phone
    return fig.update_layout(margin=dict(t=66))


def results_chart(results: dict) -> go.Figure:
    """Per task, base / single (oracle) / DLP fused / uniform merge as horizontal bars with their 95% intervals
    (task names stay readable on a phone; overlapping intervals show where a gain is not established)."""
    tasks = list(results.get("tasks", {}))
    fig = go.Figure()
    for key, name, color in [("base", "base", "#bbbbbb"), ("single", "single adapter (oracle)", "#2ca02c"),
                             ("fused", "DLP fused", "#1f77b4"), ("uniform_merge", "uniform merge", "#ff7f0e")]:
        rows = [results["tasks"][t] for t in tasks]
        values = [r.get(key) for r in rows]
        spans = [(v - r[f"{key}_ci"][0], r[f"{key}_ci"][1] - v) if v is not None and r.get(f"{key}_ci") else (0, 0)
                 for r, v in zip(rows, values)]
        fig.add_bar(y=tasks, x=values, name=name, marker_color=color, orientation="h",
                    error_x=dict(type="data", symmetric=False, color="#555", thickness=1, width=2,
                                 array=[up for _, up in spans], arrayminus=[down for down, _ in spans]),
                    hovertemplate=f"{name}: %{{x:.3f}}<extra>%{{y}}</extra>")
    fig.update_layout(barmode="group", bargap=0.2)
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(range=[0, 1], title="score (0-1), with 95% intervals", gridcolor="#eee")
    height = 110 + 64 * len(tasks)
    return _legend_below(_layout(fig, "Held-out scores per task", height), height, 90)


_CONDITION = {"base": "base", "fused": "DLP renorm", "fused_max": "fused, max weighting",
              "uniform_merge": "uniform merge", "sum": "sum", "layerwise": "layer-wise (learned)",
              "token": "token gate (learned)", "two_skill_lora": "rank-8 LoRA (baseline)"}


def two_skill_chart(results: dict, colors: dict[str, str] | None = None) -> go.Figure:
    """Per two-skill kind, every condition's score on each skill, in the skills' adapter colours: the bars
    show fusion handing the answer to one adapter rather than combining the two (a "both" chart is all zeros)."""
    from plotly.subplots import make_subplots

    from .composite import RETIRED_KINDS

    colors = {**(colors or {}), "both": "#222222"}
    kinds = [k for k in results.get("composite", {}) if k not in RETIRED_KINDS]
    fig = make_subplots(rows=max(1, len(kinds)), cols=1, subplot_titles=kinds, vertical_spacing=0.09)
    shown = set()
    for row, kind in enumerate(kinds, 1):
        cells = results["composite"][kind]["conditions"]
        skills = [k for k in next(iter(cells.values())) if not k.endswith("_ci")]  # each skill, then both
        labels = [_CONDITION.get(c, c.removeprefix("single:") + " alone") for c in cells]
        for skill in skills:
            fig.add_bar(y=labels, x=[cells[c].get(skill) for c in cells], orientation="h", name=skill,
                        marker_color=colors.get(skill, "#888888"), legendgroup=skill, showlegend=skill not in shown,
                        hovertemplate=f"{skill}: %{{x:.2f}}<extra>%{{y}}</extra>", row=row, col=1)
            shown.add(skill)
        fig.update_yaxes(autorange="reversed", row=row, col=1)
        fig.update_xaxes(range=[0, 1], gridcolor="#eee", row=row, col=1)
    fig.update_xaxes(title="share right", row=max(1, len(kinds)), col=1)
    fig.update_layout(barmode="group", bargap=0.25)
    height = 190 + (60 + 26 * max((len(results["composite"][k]["conditions"]) for k in kinds), default=6)) * len(kinds)
    fig = _layout(fig, "Two-skill prompts, skill by skill", height)
    fig.for_each_annotation(lambda a: a.update(x=0, xanchor="left", font=dict(size=13)))  # a phone keeps them whole
    return _legend_below(fig, height, 120)


def confusion_chart(labels: list[str], matrix: list[list[int]]) -> go.Figure:
    """The router's held-out confusion matrix, each row as shares of its true label."""
    shares = [[v / max(1, sum(row)) for v in row] for row in matrix]
    # No colour bar and no y-axis title: on a phone they took half the width from the cells (the shade is the
    # share of the row, the number the count, both said in the subtitle).
    fig = go.Figure(go.Heatmap(z=shares, x=labels, y=labels, colorscale="Blues", zmin=0, zmax=1, showscale=False,
                               text=[[str(v) for v in row] for row in matrix], texttemplate="%{text}",
                               textfont=dict(size=10),
                               hovertemplate="true %{y}, routed to %{x}: %{z:.1%}<extra></extra>"))
    # upright labels: slanted ones ran into each other on a phone
    fig.update_xaxes(title="router's top-1", tickangle=-90, tickmode="array", tickvals=labels, tickfont=dict(size=11))
    fig.update_yaxes(autorange="reversed", tickfont=dict(size=11))
    fig = _layout(fig, "Router on held-out prompts<br><span style='font-size:12px;color:#555'>rows: true label · "
                       "counts, shaded by share of the row</span>", 170 + 34 * len(labels))
    return fig.update_layout(margin=dict(t=66))


def sweep_chart(weights: list[float], like_a: list[float], like_b: list[float], a: str, b: str,
                colors: dict[str, str]) -> go.Figure:
    """How each answer of a sweep resembles the two ends: where the lines cross, the answer changes hands."""
    fig = go.Figure()
    for name, values in ((a, like_a), (b, like_b)):
        fig.add_scatter(x=weights, y=values, mode="lines+markers", name=f"like the {name} answer",
                        line=dict(color=colors.get(name, BASE_COLOR if name == "base" else "#888888"), width=3),
                        hovertemplate="weight on " + b + " %{x:.2f}: %{y:.2f}<extra></extra>")
    fig.update_xaxes(title=f"weight on {b}", range=[-0.03, 1.03], gridcolor="#eee", tickvals=weights)
    fig.update_yaxes(title="words in common", range=[0, 1.05], gridcolor="#eee")
    fig = _layout(fig, f"{a} → {b}", 340)
    fig.update_layout(legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"),
                      margin=dict(t=70))  # the legend above the plot, clear of the axis title
    return fig


def gate_chart(tokens: list[str], names: list[str], steps: list[list[float]], colors: dict[str, str]) -> go.Figure:
    """The token gate's weights at every generated token, stacked to 1 in the adapters' colours (which
    adapter wrote which words); the x axis reads as the answer itself."""
    fig = go.Figure()
    x = list(range(len(steps) + 1))  # token i fills [i, i + 1]: the last one (or a one-token answer) gets width too
    for j, name in enumerate(names):
        fig.add_scatter(x=x, y=[s[j] for s in [*steps, steps[-1]]] if steps else [],
                        name="base (no adapter)" if name == "base" else name,
                        mode="lines", stackgroup="gate", line=dict(width=0.5, shape="hv"),
                        fillcolor=colors.get(name, BASE_COLOR if name == "base" else "#888888"),
                        customdata=[*tokens, *tokens[-1:]],
                        hovertemplate="%{customdata}: %{y:.2f}<extra>" + name + "</extra>")
    shown = [t.replace("\n", "⏎").strip() or "·" for t in tokens]
    step = max(1, -(-len(shown) // 24))  # at most 24 tick labels, so a phone still reads them
    fig.update_xaxes(tickvals=[i + 0.5 for i in x[:-1]][::step], ticktext=shown[::step], tickangle=-60,
                     gridcolor="#eee", range=[0, len(steps)])
    fig.update_yaxes(range=[0, 1], title="gate weight", gridcolor="#eee")
    fig = _layout(fig, "Token gate: each adapter's weight<br><span style='font-size:12px;color:#555'>at every "
                       "token, mean over layers</span>", 330)
    return _legend_below(fig, 330, 120).update_layout(margin=dict(t=66))
