"""The token gate's weights under its answer: every token tinted by the adapters that wrote it."""

from __future__ import annotations

import html


def _mix(colors: list[str], weights: list[float]) -> str:
    """The weighted mean of hex colours, as rgba at 45% so black text stays readable."""
    rgb = [0.0, 0.0, 0.0]
    for c, w in zip(colors, weights):
        c = c.lstrip("#")
        for k in range(3):
            rgb[k] += w * int(c[2 * k : 2 * k + 2], 16)
    return "rgba({},{},{},0.45)".format(*(int(v) for v in rgb))


def gate_html(tokens: list[str], names: list[str], steps: list[list[float]], colors: dict[str, str]) -> str:
    """Tokens as spans shaded by the gate's mix, with the weights in each tooltip, and a legend."""
    shades = [colors.get(n, "#9e9e9e") for n in names]
    spans = []
    for tok, weights in zip(tokens, steps):
        tip = " · ".join(f"{n} {w:.2f}" for n, w in zip(names, weights))
        spans.append(f"<span title='{html.escape(tip)}' style='background:{_mix(shades, weights)}'>"
                     f"{html.escape(tok)}</span>")
    legend = " ".join(f"<span style='background:{_mix([c], [1.0])};padding:0 6px'>{html.escape(n)}</span>"
                      for n, c in zip(names, shades))
    return f"<div class='shaded'>{''.join(spans)}</div><p class='col-timing'>Shade per token: {legend} (mixed by weight)</p>"
