"""The pipeline's closing summary: pass@k per difficulty for every phase, critic sampling's n@k at equal budget,
critic quality, infrastructure errors, wall time per stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DIFFICULTY_ORDER = ("introductory", "interview", "competition", "all")


def _phases(state: dict[str, Any]) -> list[tuple[str, dict]]:
    return [(name.split("/", 1)[1], s["info"]) for name, s in state["stages"].items() if name.startswith("eval/")]


def format_table(state: dict[str, Any]) -> str:
    phases = _phases(state)
    if not phases:
        return "(no evaluation finished)"
    ks = sorted({int(k.split("@")[1]) for _, m in phases for k in m.get("all", {}) if k.startswith("pass@")})
    groups = [g for g in DIFFICULTY_ORDER if any(g in m for _, m in phases)]
    head = ["phase"] + [f"{g[:5]} p@{k}" for g in groups for k in ks]
    rows = [[phase] + [f"{100 * m.get(g, {}).get(f'pass@{k}', 0.0):.1f}" for g in groups for k in ks]
            for phase, m in phases]
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    out = ["pass@k on the test split (%)", line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    out += group_lines(phases)

    out += format_cs_table(state)
    out.extend(critic_lines(state))
    out.extend(infra_lines(state))
    out.append("")
    out.append("wall time per stage (s)")
    total = 0.0
    for name, s in state["stages"].items():
        out.append(f"  {name:<22} {s['wall_s']:8.1f}")
        total += s["wall_s"]
    out.append(f"  {'total':<22} {total:8.1f}")
    return "\n".join(out)


def group_lines(phases: list[tuple[str, dict]]) -> list[str]:
    """pass@1 on the named problem groups an evaluation reports (``groups``: the tracked training problems,
    ``rl.tracked_problems``, and the unseen-wording family, ``data.suite_unseen_wording``; coderl_ray/rl/tracked.py).

    >>> print("\\n".join(group_lines([("sft", {"groups": {"tracked": {"pass@1": 0.25, "problems": 8}}}),
    ...                                ("round_1", {"groups": {"tracked": {"pass@1": 0.5, "problems": 8}}})])))
    <BLANKLINE>
    pass@1 on problem groups (%, problems)
      tracked (8)  sft 25.0  round_1 50.0
    """
    names = list(dict.fromkeys(name for _, m in phases for name in m.get("groups") or {}))
    if not names:
        return []
    out = ["", "pass@1 on problem groups (%, problems)"]
    for name in names:
        cells = [(phase, m["groups"][name]) for phase, m in phases if name in (m.get("groups") or {})]
        out.append(f"  {name} ({cells[-1][1]['problems']})  "
                   + "  ".join(f"{phase} {100 * g['pass@1']:.1f}" for phase, g in cells))
    return out


def infra_lines(state: dict[str, Any]) -> list[str]:
    """Programs whose run hit an infrastructure limit (the sandbox failed, or the machine starved it past
    ``starvation_factor`` x its backstop, docs/sandbox.md#time), per stage that executed programs. The sandbox
    retried them; what is left is an ``infra_error``: never a label or a reward, left out of every metric above."""
    rows = []
    for name, s in state["stages"].items():
        info = s.get("info") or {}
        if name.startswith("eval/") and "infra_errors" in info.get("all", {}):
            scored = sum(info.get("outcomes", {}).values())
            rows.append((name, info["all"]["infra_errors"], scored + info["all"]["infra_errors"]))
        elif name.endswith("/rollout") and "outcomes" in info:
            rows.append((name, info["outcomes"].get("infra_error", 0), info.get("programs", 0)))
    if not rows:
        return []
    width = max(len(name) for name, _, _ in rows)
    return ["", "infrastructure errors (programs left out of every metric and label, after retries)"] + [
        f"  {name:<{width}}  {n} of {total}" for name, n, total in rows]


CS_LABELS = {"random": "random pick", "filter": "filter", "filter+critic": "filter+critic", "cs": "CS"}


def format_cs_table(state: dict[str, Any]) -> list[str]:
    """Critic sampling's rows (stage ``cs``): every strategy at the same budget k, n@k and pass@k (any of the k)."""
    info = state["stages"].get("cs", {}).get("info")
    if not info:
        return []
    strategies = info["strategies"]
    first = next(iter(strategies.values()))
    groups = [g for g in DIFFICULTY_ORDER[:-1] if g in first]
    ns = [f"{n}@k" for n in info["submissions"]]
    head = ["strategy"] + [f"{g[:5]} 1@k" for g in groups] + [f"all {n}" for n in ns] + ["all pass@k"]
    rows = [[f"{info['phase']} + {CS_LABELS.get(name, name)}"]
            + [f"{100 * g.get(grp, {}).get('1@k', 0.0):.1f}" for grp in groups]
            + [f"{100 * g['all'][key]:.1f}" for key in ns + ['pass@k']] for name, g in strategies.items()]
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    out = ["", f"critic sampling on the test split (%, k = {info['budget']} programs per problem, every strategy; "
               "n@k: n of them submitted)", line(head),
           line(["-" * w for w in widths])] + [line(r) for r in rows]
    if info.get("no_example_problems"):
        out.append(f"  ({info['no_example_problems']} problems have no example tests: ranked by the critic alone)")
    return out


def _plot_cs(ax, info: dict[str, Any]) -> None:
    names = list(info["strategies"])
    keys = ["1@k", "pass@k"]
    for i, key in enumerate(keys):
        ax.bar([j + 0.4 * i for j in range(len(names))],
               [100 * info["strategies"][n]["all"][key] for n in names], 0.4, label=key)
    ax.set_xticks([j + 0.2 for j in range(len(names))], [CS_LABELS.get(n, n) for n in names], fontsize="small")
    ax.set_ylabel("% of test problems")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{info['phase']}: k = {info['budget']} programs per problem")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()


def critic_lines(state: dict[str, Any]) -> list[str]:
    """The critics' quality on held-out test-problem programs and on the programs they were trained on: accuracy
    next to the majority-class rate, and the AUC of P(passed) over all programs / within each problem
    (docs/benchmarks.md#critic-quality says how to read them)."""
    critics = [(n.split("/")[0], s["info"]) for n, s in state["stages"].items()
               if n.endswith(("/score", "/critic_quality")) or n == "critic_binary"]
    if not critics:
        return []
    out = ["", "critic: accuracy (majority-class rate), AUC of P(passed) over all programs / within each problem"]
    width = max(len(name) for name, _ in critics)
    for name, info in critics:
        out.append(f"  {name:<{width}}  held out {_quality(info, 'heldout'):<26}  samples {_quality(info, 'train')}")
    return out


def _quality(info: dict, split: str) -> str:
    q = info.get(split)
    if not q:  # a state.json from before AUCs were recorded keeps its accuracy
        acc = info.get(f"{split}_accuracy")
        return "n/a" if acc is None else f"{100 * acc:.1f}%"
    num = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    return (f"{100 * q['accuracy']:.1f}% ({100 * q['majority_rate']:.1f}%) "
            f"{num(q.get('auc'))}/{num(q.get('auc_within_problems'))}")


def plot(state: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = _phases(state)
    cs = state["stages"].get("cs", {}).get("info")
    fig, axes = plt.subplots(1, 2 if cs else 1, figsize=(13 if cs else 7, 4), squeeze=False)
    ax = axes[0][0]
    if cs:
        _plot_cs(axes[0][1], cs)
    for g in DIFFICULTY_ORDER:
        ys = [100 * m.get(g, {}).get("pass@1", float("nan")) for _, m in phases]
        ax.plot([p for p, _ in phases], ys, marker="o", label=g, linewidth=2.5 if g == "all" else 1.5)
    ax.set_ylabel("pass@1 on the test split (%)")
    ax.set_xlabel("phase")
    ax.set_title("CodeRL on Ray: pass@1 after each phase")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_summary(state: dict[str, Any], out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    table = format_table(state)
    plot(state, out / "pass_at_1.png")
    (out / "summary.md").write_text("# Pipeline summary\n\n```\n" + table + "\n```\n\n![pass@1](pass_at_1.png)\n")
    (out / "summary.json").write_text(json.dumps(state, indent=2, default=str))
    return {"table": table, "report_dir": str(out)}
