"""The evaluation report: ``metrics.json``, a readable ``report.md`` and two PNG figures.

A pure function of the :func:`coderl_ray.eval.metrics.summarize` dict, so the pipeline can call it after every
evaluation and a user can rebuild a report from a saved ``metrics.json``. Figures are drawn on matplotlib's
object-oriented API with the Agg canvas: no pyplot global state and no display needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from coderl_ray.records import Outcome

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
CURVE_FIGURE = "pass_at_k.png"
OUTCOME_FIGURE = "outcomes.png"

_OUTCOME_COLOURS = {
    "passed": "#2e7d32", "failed": "#f9a825", "runtime_error": "#ef6c00", "timeout": "#8e24aa",
    "compile_error": "#c62828",
}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _group_rows(groups: dict[str, dict[str, Any]], ks: list[int], submissions_keys: list[str]) -> list[str]:
    header = ["group", "problems", "samples"] + [f"pass@{k}" for k in ks] + submissions_keys + \
             ["strict acc.", "test-case avg.", "infra errors"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, g in groups.items():
        cells = [name, f"{g['problems_scored']}/{g['problems']}", str(g["samples"])]
        for k in ks:
            value = g["pass@k"].get(str(k))
            count = g["pass@k_problems"].get(str(k), 0)
            cells.append(_pct(value) + ("" if value is None or count == g["problems_scored"] else f" ({count})"))
        for key in submissions_keys:
            cells.append(_pct(g.get("n@k", {}).get(key)))
        cells += [_pct(g["strict_accuracy"]), _pct(g["test_case_average"]), str(g["infra_errors"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _outcome_rows(groups: dict[str, dict[str, Any]]) -> list[str]:
    names = [o.value for o in Outcome if o is not Outcome.INFRA_ERROR]
    lines = ["| group | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for name, g in groups.items():
        cells = [f"{g['outcomes'][o]} ({_pct(g['outcome_fractions'][o])})" for o in names]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def render_markdown(metrics: dict[str, Any], title: str = "Evaluation report") -> str:
    ks = metrics["ks"]
    overall = metrics["overall"]
    nk_keys = list(overall.get("n@k", {}))
    groups = {"overall": overall, **{f"difficulty: {d}": g for d, g in metrics["by_difficulty"].items()},
              **{f"source: {s}": g for s, g in metrics["by_source"].items()}}
    lines = [f"# {title}", ""]
    lines += [
        f"{overall['problems']} problems, {overall['samples']} scored samples, "
        f"{overall['infra_errors']} infrastructure errors (excluded from every metric).", "",
        "pass@k is the unbiased estimator of Chen et al. (2021), averaged over problems with at least k scored "
        "samples (their number in parentheses when not all). Strict accuracy and test-case average follow APPS, "
        "per sample, averaged per problem then over problems.", "",
    ]
    if nk_keys:
        ranked = {p.get("ranked_by") for p in metrics["per_problem"] if p.get("ranked_by")}
        lines += [f"n@k: of k samples, those passing the example tests are ranked "
                  f"({' / '.join(sorted(ranked)) or 'random'} order) and the first n submitted; "
                  f"{overall.get('example_infra_errors', 0)} runs on the example tests were infrastructure errors "
                  "(those samples are not filtered out).", ""]
    unscored = metrics.get("unscored_problems") or []
    if unscored:
        shown = ", ".join(unscored[:20]) + (f" and {len(unscored) - 20} more" if len(unscored) > 20 else "")
        lines += [f"**Warning:** {len(unscored)} problem(s) have no scored sample and are left out of every "
                  f"average: {shown}.", ""]
    lines += ["## Metrics", ""] + _group_rows(groups, ks, nk_keys) + [""]
    lines += ["## Outcomes", "", "Counts of scored samples (infrastructure errors excluded).", ""]
    lines += _outcome_rows(groups) + [""]
    lines += ["## Figures", "", f"![pass@k per difficulty]({CURVE_FIGURE})", "",
              f"![outcome distribution]({OUTCOME_FIGURE})", ""]
    lines += ["## Per problem", "", "| problem | difficulty | n | c | "
              + " | ".join(f"pass@{k}" for k in ks) + " | test-case avg. | infra |",
              "|" + "---|" * (6 + len(ks))]
    for p in metrics["per_problem"]:
        cells = [p["problem_id"], p["difficulty"], str(p["n"]), str(p["c"])]
        cells += [_pct(p.get("pass@k", {}).get(str(k))) for k in ks]
        cells += [_pct(p.get("test_case_average")), str(p["infra_errors"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_pass_at_k(metrics: dict[str, Any], path: Path) -> None:
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    series = {"overall": metrics["overall"], **metrics["by_difficulty"]}
    all_ks: set[int] = set()
    for name, g in series.items():
        curve = g.get("curve") or {}
        if not curve:
            continue
        ks = [int(k) for k in curve]
        all_ks.update(ks)
        ax.plot(ks, [100 * curve[str(k)] for k in ks], marker="o", label=name,
                linestyle="--" if name == "overall" else "-")
    ax.set_xscale("log")
    if all_ks:
        ax.set_xticks(sorted(all_ks), [str(k) for k in sorted(all_ks)])
        ax.minorticks_off()
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("pass@k (%)")
    ax.set_ylim(0, 100)
    ax.set_title("pass@k per difficulty")
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def plot_outcomes(metrics: dict[str, Any], path: Path) -> None:
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    groups = {"overall": metrics["overall"], **metrics["by_difficulty"]}
    names = list(groups)
    left = [0.0] * len(names)
    for outcome, colour in _OUTCOME_COLOURS.items():
        widths = [100 * groups[g]["outcome_fractions"][outcome] for g in names]
        ax.barh(names, widths, left=left, color=colour, label=outcome)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of scored samples (%)")
    ax.set_title("Outcome distribution (infrastructure errors excluded)")
    ax.invert_yaxis()
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=5, fontsize="small", frameon=False)
    fig.savefig(path, bbox_inches="tight")


def write_report(metrics: dict[str, Any], out_dir: str | Path, title: str = "Evaluation report") -> dict[str, Path]:
    """Write ``metrics.json``, ``report.md``, ``pass_at_k.png`` and ``outcomes.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out / METRICS_FILE, "report": out / REPORT_FILE,
             "pass_at_k": out / CURVE_FIGURE, "outcomes": out / OUTCOME_FIGURE}
    tmp = paths["metrics"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(paths["metrics"])
    paths["report"].write_text(render_markdown(metrics, title), encoding="utf-8")
    plot_pass_at_k(metrics, paths["pass_at_k"])
    plot_outcomes(metrics, paths["outcomes"])
    return paths
