"""Training metrics: a window summary every N steps, to the console, a progress bar, TensorBoard, MLflow and W&B.

Only rank 0 logs (every rank computes the same summary). TensorBoard goes through ``tensorboardX`` (a dependency);
MLflow and Weights & Biases are used only when configured, and then must be installed (``pip install mlflow`` /
``pip install wandb``): Ray Train 2.x dropped its logger callbacks, so, as Ray's docs advise, the training function
logs to them itself.
"""

from __future__ import annotations

import sys
from typing import Any

# Per-step values that are summed over a window rather than averaged.
SUMMED = ("tokens", "padded_tokens")


def summarize(window: list[dict[str, Any]], elapsed_s: float, tokens_all_workers: float | None = None) -> dict:
    """Mean of every metric over a window of steps, plus throughput.

    ``tokens_per_s``: program tokens trained on per second by all workers (``tokens_all_workers`` is the window's
    token count summed over workers; without it, this worker's count). ``padding`` is the share of the padded
    tensors that was padding, the compute that bucketing and dynamic padding try to save.
    """
    out: dict[str, float] = {}
    keys = {k for m in window for k in m if k not in ("step", *SUMMED)}
    for k in sorted(keys):
        vals = [float(m[k]) for m in window if k in m]
        out[k] = sum(vals) / len(vals)
    tokens = sum(m.get("tokens", 0) for m in window)
    out["tokens_per_s"] = (tokens_all_workers if tokens_all_workers is not None else tokens) / max(elapsed_s, 1e-9)
    padded = sum(m.get("padded_tokens", 0) for m in window)
    real = sum(m.get("real_tokens", 0) for m in window)
    if padded:
        out["padding"] = 1.0 - real / padded
    out.pop("real_tokens", None)
    return out


class MetricsLogger:
    """Rank 0's sinks. ``log(step, summary)`` writes one window summary everywhere; ``advance()`` moves the bar."""

    def __init__(self, name: str, total_steps: int, start_step: int = 0, *, log_dir: str = "",
                 mlflow_tracking_uri: str = "", wandb_project: str = "", progress_bar: bool = True,
                 run_config: dict | None = None, in_ray: bool = False):
        self.name = name
        self.total = total_steps
        self._tb = self._mlflow = self._wandb = self._bar = None
        if log_dir:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(log_dir)
        if mlflow_tracking_uri:
            mlflow = _require("mlflow", "train.mlflow_tracking_uri")
            mlflow.set_tracking_uri(mlflow_tracking_uri)
            mlflow.set_experiment("coderl_ray")
            mlflow.start_run(run_name=name)
            if run_config:
                mlflow.log_params({k: v for k, v in run_config.items() if isinstance(v, (int, float, str, bool))})
            self._mlflow = mlflow
        if wandb_project:
            wandb = _require("wandb", "train.wandb_project")
            self._wandb = wandb.init(project=wandb_project, name=name, config=run_config or {}, resume="allow")
        if progress_bar:
            if in_ray:
                # Ray's tqdm draws the bar in the driver's console (worker stderr would interleave with Ray's logs).
                from ray.experimental.tqdm_ray import tqdm as ray_tqdm

                self._bar = ray_tqdm(total=total_steps, desc=name)
                self._bar.update(start_step)
            else:
                from tqdm import tqdm

                self._bar = tqdm(total=total_steps, initial=start_step, desc=name, file=sys.stderr)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def log(self, step: int, summary: dict[str, float]) -> None:
        line = " ".join(f"{k}={v:.4g}" for k, v in summary.items())
        # Not print(): unless RAY_TRAIN_ENABLE_PRINT_PATCH=0 (coderl_ray.ray_runtime.setup_worker), print in a Ray
        # Train worker also goes through Ray Train's logger, and the driver would show every line twice.
        sys.stdout.write(f"[{self.name}] step {step}/{self.total} {line}\n")
        sys.stdout.flush()
        if self._bar is not None:
            shown = " ".join(f"{k}={summary[k]:.3g}" for k in ("loss", "tokens_per_s") if k in summary)
            self._bar.set_description(f"{self.name} {shown}")
        if self._tb is not None:
            for k, v in summary.items():
                self._tb.add_scalar(f"{self.name}/{k}", v, step)
            self._tb.flush()
        if self._mlflow is not None:
            self._mlflow.log_metrics(summary, step=step)
        if self._wandb is not None:
            self._wandb.log(summary, step=step)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            # Ray's tqdm sends its "closed" state as a line on stdout; Ray Train may end this worker before the
            # buffer is written, and the driver then keeps redrawing a finished bar under every later stage.
            sys.stdout.flush()
            sys.stderr.flush()
        if self._tb is not None:
            self._tb.close()
        if self._mlflow is not None:
            self._mlflow.end_run()
        if self._wandb is not None:
            self._wandb.finish()


def _require(module: str, key: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{key} is set but {module} is not installed: pip install {module} (or clear {key})") \
            from None
