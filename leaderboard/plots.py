"""The picture of the seed paper's finding, per task: KnowMem_forget and Utility against the
quantizer, one line per method, solid for full fine-tuning and dashed for LoRA; the target
and retrain models in grey. PNG via matplotlib (Agg backend, no display needed), imported when a
plot is drawn: ``harness ls`` imports this module (through the ``leaderboard`` package)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_task(task: str, board: dict[str, Any], folder: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = board["quantizers"]
    x = range(len(order))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    methods = sorted({e["method"] for e in board["rows"] + board["unranked"]})
    palette = [plt.get_cmap("tab10")(i) for i in range(10) if i != 7]  # grey is for the references
    colours = {m: palette[i % len(palette)] for i, m in enumerate(methods)}
    for ax, key, title in zip(axes, ("knowmem_f", "knowmem_r"), ("KnowMem_forget (lower: forgotten)", "Utility (higher is better)")):
        for ref in board["references"]:
            ys = [ref["metrics"].get(q, {}).get(key) for q in order]
            ax.plot(x, [float("nan") if y is None else y for y in ys], color="grey",
                    linestyle=":" if ref["model"] == "retrain" else "-", linewidth=2, label=ref["model"])
        for e in board["rows"] + board["unranked"]:
            ys = [e["metrics"].get(q, {}).get(key) for q in order]
            ax.plot(x, [float("nan") if y is None else y for y in ys], marker="o", markersize=3,
                    color=colours[e["method"]], linestyle="-" if e["mode"] == "full" else "--",
                    label=f"{e['method']} ({e['mode']})")
        ax.set_xticks(list(x), order, rotation=30)
        ax.set_title(title)
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(f"{task}: what each quantizer does to each unlearning (solid: full, dashed: LoRA)")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{task}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
