"""The bar chart of ``--plot``: every engine's speed relative to the best peer, per case."""
from .tables import index_rows

__all__ = ["plot"]


def plot(doc, path):
    """Bar chart of every engine's 'vs best peer' ratio per case (log scale), one panel per
    thread count.  Needs matplotlib; raises ImportError with an install hint otherwise."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install matplotlib "
                          "(or pip install 'fastconv[viz]')") from None
    runs = doc["runs"]
    fig, axes = plt.subplots(len(runs), 1, figsize=(12, 4.5 * len(runs)), squeeze=False)
    for ax, run in zip(axes[:, 0], runs):
        cases, engines = [], []
        for r in run["results"]:
            if r["case"] not in cases:
                cases.append(r["case"])
            if r["engine"] not in engines:
                engines.append(r["engine"])
        idx = index_rows(run)
        width = 0.8 / max(len(engines), 1)
        for j, e in enumerate(engines):
            xs, ys = [], []
            for i, c in enumerate(cases):
                r = idx.get((c, e))
                if r and r["vs_best_peer"] and r["check"] == "ok":
                    xs.append(i + (j - (len(engines) - 1) / 2) * width)
                    ys.append(r["vs_best_peer"])
            ax.bar(xs, ys, width, label=e)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels(cases, rotation=30, ha="right")
        ax.set_ylabel("speed vs best peer (x)")
        ax.set_title(f"{run['threads']} thread(s): best peer's time / engine's time")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
