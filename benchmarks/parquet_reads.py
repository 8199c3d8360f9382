"""How long does Ray Data take to read the pipeline's Parquet folders, through its DataSourceV2 and through V1?

    python benchmarks/parquet_reads.py              # 3 repeats: the micro buffer, 30,000 and 100,000 rows
    python benchmarks/parquet_reads.py --big-rows   # the micro buffer only

Ray 2.60 reads Parquet through DataSourceV2 by default: each read that runs starts with a ``ListFiles`` task that
reads the files' footers with actors (``RAY_DATA_PARQUET_FOOTER_NUM_ACTORS``, 32 by default), then ``ReadFiles``
tasks; counting a plain read needs only the footers and runs nothing. Every stage of the pipeline reads small Parquet
folders (a replay-buffer round, the reference programs, a scored round), so a fixed cost per read adds up over a
run. This script times the stages' own dataset expressions (:func:`coderl_ray.stages.critic_parts` and
``critic_dataset``, the RL stage's filter) on buffer-shaped folders written here, in one Ray session on ``--cpus``
CPUs, alternating V2 (with the footer-actor count set), V1, and the pipeline's own choice
(:func:`coderl_ray.data.parquet.read_parquet`: V1 for small local folders) repeat by repeat so that all see the same
machine load, and prints the median of each with the ratios V2 / V1 and V2 / ours. Its size limit
(``CODERL_SMALL_PARQUET_BYTES``) comes from the crossover measured here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_buffer_like(folder: Path, rows: int, files: int, seed: int, with_buffer_columns: bool) -> None:
    """``files`` Parquet files holding ``rows`` rows shaped like replay-buffer (or reference-program) rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    bounds = np.linspace(0, rows, files + 1).astype(int)
    for f, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        n = int(hi - lo)
        cols = {
            "problem_id": [f"p{i}" for i in rng.integers(0, max(1, rows // 3), n)],
            "prompt_ids": [rng.integers(0, 400, k).tolist() for k in rng.integers(20, 200, n)],
            "token_ids": [rng.integers(0, 400, k).tolist() for k in rng.integers(10, 90, n)],
            "outcome": rng.choice(["passed", "failed", "runtime_error", "compile_error"], n).tolist(),
        }
        if with_buffer_columns:
            cols["is_greedy"] = (rng.random(n) < 0.33).tolist()
            cols["relative_return"] = [None if x < 0.2 else float(x) for x in rng.random(n)]
        pq.write_table(pa.table(cols), folder / f"part-{f:04d}.parquet")


def cases(root: Path, cfg):
    """name -> a function that builds and fully executes one of the stages' datasets."""
    from coderl_ray import stages
    from coderl_ray.data.parquet import read_parquet
    from coderl_ray.rl.replay_buffer import read_rounds

    buffer, gt = root / "buffer", root / "ground_truth"

    def parts():
        return stages.critic_parts(cfg, read_rounds(buffer, [1]), gt)

    def rl_rows():
        ds = read_parquet(str(buffer / "round_0001")).filter(
            lambda r: not r["is_greedy"] and r["relative_return"] is not None and r["relative_return"] != 0.0)
        return ds.materialize().count()

    return {
        "critic rows: count of the union": lambda: stages.critic_dataset(cfg, read_rounds(buffer, [1]), gt).count(),
        "critic rows: count per part": lambda: sum(p.count() for p in parts()),
        "critic rows: union + shuffle, read": lambda: len(stages.critic_dataset(
            cfg, read_rounds(buffer, [1]), gt).random_shuffle(seed=0).take_all()),
        "RL rows: filter + materialize": rl_rows,
        "reference rows: read": lambda: len(read_parquet(str(gt)).take_all()),
    }


def time_cases(root: Path, cfg, repeats: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per execution of every case, by reader: "v2" and "v1" forced for every read, "ours" the choice of
    :func:`coderl_ray.data.parquet.read_parquet` (V1 below its size limit, else Ray Data's default V2)."""
    import ray.data

    from coderl_ray.data.parquet import SMALL_BYTES_ENV

    ctx = ray.data.DataContext.get_current()
    default_limit = os.environ.get(SMALL_BYTES_ENV)
    timed: dict[str, dict[str, list[float]]] = {}
    try:
        for _ in range(repeats):
            for source in ("v2", "v1", "ours"):
                ctx.use_datasource_v2 = source != "v1"
                if source == "ours":
                    os.environ.pop(SMALL_BYTES_ENV, None)
                    if default_limit is not None:
                        os.environ[SMALL_BYTES_ENV] = default_limit
                else:
                    os.environ[SMALL_BYTES_ENV] = "0"  # no size-based choice: the context's reader for every read
                for name, run in cases(root, cfg).items():
                    t0 = time.perf_counter()
                    run()
                    timed.setdefault(name, {}).setdefault(source, []).append(time.perf_counter() - t0)
    finally:
        ctx.use_datasource_v2 = True
    return timed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--footer-actors", default="2", help="RAY_DATA_PARQUET_FOOTER_NUM_ACTORS for the V2 reads "
                        "(Ray's default is 32; this project used 2 before switching to V1)")
    parser.add_argument("--big-rows", type=int, nargs="*", default=[30_000, 100_000],
                        help="rows of larger buffers, 64 files each (none: the micro buffer only)")
    args = parser.parse_args()

    # Both read before Ray Data is imported.
    os.environ["RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"] = args.footer_actors
    os.environ["RAY_DATA_LIST_FILES_THREADED_NUM_WORKERS"] = "1"
    import ray
    import ray.data

    from coderl_ray.config import load_config
    from coderl_ray.data.parquet import local_size

    cfg = load_config(Path(__file__).resolve().parents[1] / "tests" / "configs" / "micro.yaml", [])
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = True  # as Ray Train's dataset config in coderl_ray.train.loop
    sizes = [("micro buffer: 72 rows in 2 files + 24 reference rows", 72, 2, 24)]
    for rows in args.big_rows:
        sizes.append((f"buffer of {rows:,} rows in 64 files + {rows // 10:,} reference rows", rows, 64, rows // 10))
    print(f"Ray {ray.__version__}, {args.cpus} CPUs, {args.repeats} repeats, V2 with {args.footer_actors} footer "
          "actors; median seconds per execution")
    with tempfile.TemporaryDirectory() as tmp:
        for label, rows, files, gt_rows in sizes:
            root = Path(tmp) / f"{rows}"
            write_buffer_like(root / "buffer" / "round_0001", rows, files, seed=1, with_buffer_columns=True)
            write_buffer_like(root / "ground_truth", gt_rows, max(1, files // 4), seed=2, with_buffer_columns=False)
            time_cases(root, cfg, 1)  # warm-up: worker processes, imports
            timed = time_cases(root, cfg, args.repeats)
            mib = local_size(str(root / "buffer"), 2**62) / 2**20
            print(f"\n{label} ({mib:.1f} MiB of buffer Parquet)")
            print(f"  {'dataset':36s} {'V2 s':>7s} {'V1 s':>7s} {'V2/V1':>6s} {'ours s':>7s} {'V2/ours':>7s}")
            med = {name: {k: statistics.median(v) for k, v in by.items()} for name, by in timed.items()}
            for name, m in med.items():
                print(f"  {name:36s} {m['v2']:7.2f} {m['v1']:7.2f} {m['v2'] / m['v1']:6.1f} {m['ours']:7.2f} "
                      f"{m['v2'] / m['ours']:7.1f}")
            union, per_part = med["critic rows: count of the union"], med["critic rows: count per part"]
            print(f"  the critic stage's row count, of the union / per part: V2 {union['v2'] / per_part['v2']:.1f}x, "
                  f"V1 {union['v1'] / per_part['v1']:.1f}x")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
