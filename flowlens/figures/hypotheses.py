"""Hypothesis test tables as a figure: one panel per hypothesis, effect and confidence interval per row.

Takes the table of ``flowlens.hypotheses.evaluate`` (a pandas DataFrame with columns
``hypothesis``, ``sweep``, ``a``, ``b``, ``effect``, ``ci_low``, ``ci_high``, ``p_value``,
``p_adjusted``, ``n``); never runs a model. Each panel draws every sweep value of one hypothesis as
a point (the effect, a − b) with its interval, filled when the adjusted p-value is below
``alpha``, with the p-values written beside it, and a dashed line at 0 (no effect).
"""

from __future__ import annotations

import numpy as np

from flowlens.errors import FlowlensError

REQUIRED = ("hypothesis", "sweep", "a", "b", "effect", "ci_low", "ci_high", "p_value", "p_adjusted", "n")


def hypothesis_figure(table, *, alpha: float = 0.05, title: str | None = None, width: float = 9.0):
    """A forest plot of a hypothesis table (see the module docstring); returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    missing = [c for c in REQUIRED if c not in getattr(table, "columns", ())]
    if missing:
        raise FlowlensError(
            f"hypothesis_figure needs the table of flowlens.hypotheses.evaluate; it lacks the columns {missing}."
        )
    if not len(table):
        raise FlowlensError("hypothesis_figure got an empty table; evaluate at least one hypothesis first.")
    names = list(dict.fromkeys(table.hypothesis.tolist()))
    heights = [max(1, int((table.hypothesis == n).sum())) for n in names]
    fig, axes = plt.subplots(len(names), 1, figsize=(width, 0.9 + 0.42 * sum(heights) + 0.55 * len(names)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        sub = table[table.hypothesis == name]
        y = np.arange(len(sub))[::-1]
        eff = sub.effect.to_numpy(float)
        lo, hi = sub.ci_low.to_numpy(float), sub.ci_high.to_numpy(float)
        sig = sub.p_adjusted.to_numpy(float) < alpha
        ax.errorbar(eff, y, xerr=[eff - lo, hi - eff], fmt="none", ecolor="0.35", capsize=3, lw=1.2)
        ax.scatter(eff[sig], y[sig], color="C3", zorder=3, label=f"p_adj < {alpha:g}")
        ax.scatter(eff[~sig], y[~sig], facecolor="white", edgecolor="C0", zorder=3, label="not significant")
        ax.axvline(0.0, color="0.6", ls="--", lw=0.8)
        labels = [s if s else "all frames" for s in sub.sweep.astype(str)]
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_ylim(-0.6, len(sub) - 0.4)
        for yy, p, pa, n in zip(y, sub.p_value, sub.p_adjusted, sub.n, strict=True):
            ax.text(1.02, yy, f"p={p:.3g}  adj={pa:.3g}  n={int(n)}", transform=ax.get_yaxis_transform(),
                    ha="left", va="center", fontsize=7)
        first = sub.iloc[0]
        ax.set_title(f"{name}   ({first.a} − {first.b})", fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=8)
    axes[-1, 0].set_xlabel("effect (a − b) with bootstrap interval", fontsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    top = 1.0 - 0.4 / fig.get_figheight()
    fig.legend(handles, labels, loc="upper right", ncol=2, fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 0.76, top))
    return fig
