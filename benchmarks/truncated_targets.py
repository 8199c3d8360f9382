"""How many reference programs are cut at the target limit (and so train without EOS)?

    python benchmarks/truncated_targets.py                      # the demo (configs/tiny.yaml), MBPP, the APPS sample

The demo's rows are built as its pipeline builds them: its problems (``data`` of the config), the tokenizer trained
by ``stages.prepare_actor``, ``model.max_target_tokens``. MBPP (all 974 tasks) and the five APPS problems in
``$CODERL_SHARED_DATA`` use the CodeT5 tokenizer there and the paper's 512 target tokens. Every count comes from
``rl.replay_buffer.ground_truth_rows``, the function that builds the SFT / cross-entropy / critic rows, with the
config's ``data.reindent`` (override it as ``data.reindent=tabs`` after the options).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coderl_ray.config import load_config  # noqa: E402
from coderl_ray.rl.replay_buffer import ground_truth_rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def count(name: str, problems: list[dict], tokenizer, max_source: int, max_target: int, reindent: str) -> dict:
    rows = ground_truth_rows(problems, tokenizer, max_source, max_target, reindent)
    cut = [r for r in rows if r["token_ids"][-1] != tokenizer.eos_token_id]
    # The uncut length of the longest: ground_truth_rows with a limit no program reaches.
    longest = max(len(r["token_ids"]) - 1
                  for r in ground_truth_rows(problems, tokenizer, max_source, 10**9, reindent))
    out = {"dataset": name, "programs": len(rows), "cut": len(cut), "max_target_tokens": max_target,
           "longest": longest}
    print(f"| {name} | {max_target} | {len(rows)} | {len(cut)} ({100 * len(cut) / max(1, len(rows)):.1f}%) | "
          f"{longest} |", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.reindent=tabs")
    parser.add_argument("--shared-data", type=Path,
                        default=Path(os.environ.get("CODERL_SHARED_DATA", ROOT.parent / "shared" / "data")))
    args = parser.parse_args()

    from coderl_ray import stages
    from coderl_ray.data.apps import load_apps_dir
    from coderl_ray.data.mbpp import load_mbpp
    from coderl_ray.models.tokenizer import load_tokenizer

    cfg = load_config(args.config, args.overrides)
    print("| data | target limit (tokens) | reference programs | cut, no EOS | longest (tokens, with no limit) |")
    print("| --- | --- | --- | --- | --- |")
    train, _ = stages.load_problems(cfg.data)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = load_tokenizer(stages.prepare_actor(cfg, train, Path(tmp)))
        count(f"demo ({Path(args.config).name})", train, tokenizer, cfg.model.max_source_tokens,
              cfg.model.max_target_tokens, cfg.data.reindent)
    codet5 = args.shared_data / "tokenizers" / "codet5"
    if not codet5.is_dir():
        print(f"(no {codet5}: MBPP and APPS skipped)")
        return 0
    tokenizer = load_tokenizer(codet5)
    for name, problems in (("MBPP (974 tasks)", load_mbpp(args.shared_data / "mbpp" / "mbpp.jsonl")),
                           ("APPS sample (5 problems)", load_apps_dir(args.shared_data / "apps_sample"))):
        count(name, problems, tokenizer, 600, 512, cfg.data.reindent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
