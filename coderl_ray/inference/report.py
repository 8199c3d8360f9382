"""Critic sampling's report: ``metrics.json``, ``report.md`` and ``critic_sampling.png`` from the metrics dict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIGURE = "critic_sampling.png"
LABELS = {"random": "plain, random pick", "filter": "plain, filtered by example tests",
          "filter+critic": "plain, filtered, critic-ranked", "cs": "critic sampling"}


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def render_markdown(metrics: dict[str, Any], title: str) -> str:
    k, subs = metrics["budget"], metrics["submissions"]
    keys = [f"{n}@k" for n in subs] + ["pass@k"]
    diag = metrics["diagnostics"]
    lines = [f"# {title}", "",
             f"{metrics['problems']} problems, k = {k} generated programs per problem for every strategy; n@k: n of "
             f"them submitted (example-test passers first, then as the strategy orders them), solved if one passes "
             f"the hidden tests; pass@k: any of the k passes.", ""]
    none = diag["problems_without_example_tests"]
    if none:
        lines += [f"{none} problem(s) have no example tests: their programs are ranked by the critic alone.", ""]
    shared = diag.get("problems_with_examples_among_hidden_tests", 0)
    if shared:
        lines += [f"{shared} problem(s) have example tests that are also hidden tests (common practice: MBPP's first "
                  f"assert is both), so a program the filter keeps has already passed part of its hidden tests; "
                  f"`coderl-ray convert mbpp --hold-out-example` keeps MBPP's example apart (docs/data.md).", ""]
    lines += ["| strategy | group | problems | " + " | ".join(keys) + " |", "|" + "---|" * (3 + len(keys))]
    for name, groups in metrics["strategies"].items():
        for group, g in groups.items():
            lines.append(f"| {LABELS.get(name, name)} | {group} | {g['problems']} | "
                         + " | ".join(_pct(g.get(key)) for key in keys) + " |")
    lines += ["", "## What each origin of programs added", "",
              "New: no earlier program of the problem has the same code. Newly solved: no plain sample of the problem "
              "passed the hidden tests, a program of this origin did.", "",
              "| origin | programs | new | pass examples | new passing examples | pass hidden | new passing hidden | "
              "problems | newly solved | newly passing examples | infra errors |", "|" + "---|" * 11]
    for origin, s in diag["by_origin"].items():
        if s:
            lines.append(f"| {origin} | " + " | ".join(str(s.get(c, 0)) for c in (
                "programs", "new_programs", "pass_examples", "new_pass_examples", "pass_hidden", "new_pass_hidden",
                "problems", "newly_solved", "newly_passing_examples", "hidden_infra_errors")) + " |")
    infra = sum(s.get("hidden_infra_errors", 0) for s in diag["by_origin"].values())
    lines += ["", f"{infra} program(s) got an infrastructure error on the hidden tests (the sandbox broke or the "
              "machine starved them, after retries): they count in no n@k or pass@k above."]
    lines += ["", "Problems by plan in each pass: " + "; ".join(
        f"{p}: {', '.join(f'{o} {c}' for o, c in plans.items())}" for p, plans in diag["problems_by_plan"].items()),
              "", f"Wall time (s): {json.dumps(metrics.get('wall_s', {}))}", "", f"![n@k]({FIGURE})", ""]
    return "\n".join(lines)


def plot(metrics: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    names = list(metrics["strategies"])
    keys = [f"{n}@k" for n in metrics["submissions"]] + ["pass@k"]
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        ax.bar([j + i * width for j in range(len(names))],
               [100 * (metrics["strategies"][s]["all"][key] or 0) for s in names], width, label=key)
    ax.set_xticks([j + width * (len(keys) - 1) / 2 for j in range(len(names))],
                  [LABELS.get(s, s) for s in names], fontsize="small")
    ax.set_ylabel("% of problems")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Equal budget: k = {metrics['budget']} programs per problem")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def write_cs_report(metrics: dict[str, Any], out: str | Path, title: str = "Critic sampling") -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    tmp.replace(out / "metrics.json")
    (out / "report.md").write_text(render_markdown(metrics, title))
    plot(metrics, out / FIGURE)
    return out
