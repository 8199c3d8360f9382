"""Typed configuration: one dataclass per role, loaded from YAML, overridden from the command line.

    cfg = load_config("configs/tiny.yaml", ["rl.rounds=3", "rollout.temperature=0.8"])

Sizes compose like this (the question users of other RL frameworks cannot answer quickly):

* a rollout round generates ``len(train problems) * rollout.num_samples`` sampled programs plus one greedy baseline
  per problem (``rl.algorithm`` grpo and rloo: one more sample instead of the greedy program),
  ``rollout.batch_size_per_worker`` prompts at a time on each of ``rollout.num_workers`` generators,
  decoded in calls of at most ``rollout.max_rows_per_generate`` rows (prompts x samples);
* each trainer step consumes ``batch_size`` sequences in total, i.e. ``batch_size / train.num_workers`` per worker
  (the ``*_per_worker`` split is computed, never configured);
* an RL round runs ``rl.steps_per_round`` optimizer steps; each (``rl.alternation: micro_batch``, the original
  CodeRL's) adds the losses of ``rl.batch_size`` ground-truth programs (cross-entropy) and ``rl.batch_size`` sampled
  programs (RL), each at weight 1/2, or (``step``) even steps are cross-entropy and odd steps RL.

A wrong key or a value of the wrong type is a :class:`ConfigError` that names the key.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration key that does not exist, or a value of the wrong type or range."""


@dataclass
class DataConfig:
    """Where problems come from. Empty paths mean the embedded, procedurally generated suite."""

    train_path: str = ""  # canonical problems JSON Lines (e.g. written by `coderl-ray convert`)
    test_path: str = ""
    suite_seed: int = 0  # seed of the embedded suite's generator (the test split uses a different stream)
    suite_train_problems: int = 400
    suite_test_problems: int = 90
    # Share of the suite's problems (both splits) in the unseen-wording family: one constant spelled out ("greater
    # than seven"), which no reference solution shows; the training split's problems of the family have tests but
    # no reference solution, so only RL can learn the words (docs/suite.md). 0 = off (the suite as before).
    suite_unseen_wording: float = 0.0
    max_train_problems: int = 0  # 0 = all; otherwise a seeded subset (for quick runs)
    max_test_problems: int = 0
    # 0 = every training problem's reference solutions are used. N > 0 = only N seeded training problems keep them
    # (SFT, the cross-entropy steps, the critic's "passed" examples); the rest keep their question and tests, so only
    # RL learns from them. Writing tests is cheaper than writing solutions: this is the case RL from tests is for.
    reference_problems: int = 0
    # Indentation of reference solutions as training targets (data/reindent.py): "spaces" = 4 per block level, read
    # by Python's tokenizer (the program is unchanged); "tabs" = the original CodeRL's line-based reindent to tabs;
    # "none" = as written.
    reindent: Literal["spaces", "tabs", "none"] = "spaces"

    def __post_init__(self) -> None:
        if self.reference_problems < 0:
            raise ConfigError(f"data.reference_problems must be >= 0, got {self.reference_problems}")
        if not 0.0 <= self.suite_unseen_wording <= 1.0:
            raise ConfigError(f"data.suite_unseen_wording is a share in [0, 1], got {self.suite_unseen_wording}")
        if bool(self.train_path) != bool(self.test_path):
            raise ConfigError("data.train_path and data.test_path must be given together (or both left empty "
                              "for the embedded suite)")


@dataclass
class ModelConfig:
    """The actor. ``name_or_path='tiny'`` builds a small random model with a tokenizer trained on the problems."""

    name_or_path: str = "tiny"  # "tiny", a Hugging Face Hub id, or a local folder
    arch: Literal["seq2seq", "causal"] = "seq2seq"
    tokenizer: str = ""  # tokenizer folder or Hub id; "" = the model's own (or one trained for "tiny")
    tokenizer_vocab_size: int = 2000  # only for a trained tokenizer
    # Shape of the "tiny" random model (ignored for pretrained ones).
    d_model: int = 128
    d_ff: int = 512
    num_layers: int = 2
    num_heads: int = 4
    max_source_tokens: int = 600
    max_target_tokens: int = 512


@dataclass
class TrainConfig:
    """How Ray Train runs a training loop (shared by SFT, critic and RL); docs/training.md explains each choice.

    One optimizer step takes a stage's ``batch_size`` rows, ``batch_size / num_workers`` on each worker; a worker
    splits its rows into micro-batches of at most ``micro_batch_size_per_worker`` rows and at most
    ``max_tokens_per_micro_batch`` padded tokens and accumulates their gradients. Micro-batching changes memory,
    never the objective: the step's loss is exactly the loss of the whole batch.
    """

    num_workers: int = 1
    use_gpu: bool = False
    # CPUs each worker reserves; fractions are allowed: on one machine the persistent roles hold their reservations
    # all run long while the staged loop uses them one stage at a time (docs/architecture.md, "Roles").
    cpus_per_worker: float = 1.0
    # With use_gpu: the share of a GPU each worker reserves, of both trainers. Below 1, roles share a GPU (Ray books
    # the shares; memory is not partitioned: `coderl-ray plan` adds up what the roles on each GPU hold). With more
    # than one worker it must exceed 0.5, so that Ray never puts two ranks of one trainer on one GPU (NCCL refuses:
    # "Duplicate GPU detected", ray-project/ray#48012).
    gpus_per_worker: float = 1.0
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast on GPU (fp32 master weights and optimizer)
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping
    max_failures: int = 1  # Ray Train restarts from the last checkpoint this many times
    checkpoint_every: int = 0  # steps between Ray Train checkpoints (0 = only the final one)
    parallel: Literal["ddp", "fsdp"] = "ddp"  # fsdp shards parameters, gradients and optimizer state
    micro_batch_size_per_worker: int = 0  # rows per micro-batch (gradient accumulation); 0 = whole worker batch
    max_tokens_per_micro_batch: int = 0  # padded prompt + program tokens per micro-batch; 0 = no budget
    bucket_batches: int = 0  # sort this many batches' rows by length and regroup them (less padding); 0 = off
    pad_to_multiple_of: int = 1  # e.g. 64 with compile: a bounded set of shapes, tensor-core friendly sizes
    gradient_checkpointing: bool = False  # recompute activations in backward: ~1/3 more compute, far less memory
    compile: bool = False  # torch.compile the model (per transformer block under fsdp)
    # CPU threads for torch in each worker; 0 = Ray's default, one per reserved CPU. On a small CPU machine nothing
    # else computes while a staged stage trains, so it can use more cores than it reserves (Ray Data keeps the rest);
    # the online loop's steps, which run beside the other roles, use at most the reserved CPUs (at least one thread).
    torch_threads: int = 0
    # A custom resource each trainer worker also requests (a small share of one unit), which pins the trainers to
    # the nodes that advertise it, e.g. `trainer` on cluster/local-cluster.sh's trainer node; "" = any node.
    resource: str = ""
    tensorboard: bool = True  # event files under <output_dir>/ray_train/<run>/tensorboard
    mlflow_tracking_uri: str = ""  # log metrics to MLflow too (needs `pip install mlflow`)
    wandb_project: str = ""  # log metrics to Weights & Biases too (needs `pip install wandb`)

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ConfigError("train.num_workers must be >= 1")
        if min(self.micro_batch_size_per_worker, self.max_tokens_per_micro_batch, self.bucket_batches) < 0:
            raise ConfigError("train.micro_batch_size_per_worker, train.max_tokens_per_micro_batch and "
                              "train.bucket_batches must be >= 0 (0 = off)")
        if self.pad_to_multiple_of < 1:
            raise ConfigError("train.pad_to_multiple_of must be >= 1")
        if self.torch_threads < 0:
            raise ConfigError("train.torch_threads must be >= 0 (0 = one thread per reserved CPU)")
        if self.parallel == "fsdp" and self.num_workers == 1:
            raise ConfigError("train.parallel=fsdp with train.num_workers=1 shards nothing (one worker holds every "
                              "shard); use ddp, or more workers")
        if not 0 < self.gpus_per_worker <= 1:
            raise ConfigError(f"train.gpus_per_worker must lie in (0, 1] (a worker trains on one GPU, or a share of "
                              f"one), got {self.gpus_per_worker}")
        if self.use_gpu and self.num_workers > 1 and self.gpus_per_worker <= 0.5:
            raise ConfigError(f"train.gpus_per_worker={self.gpus_per_worker:g} with train.num_workers="
                              f"{self.num_workers}: Ray may put two workers of one trainer on the same GPU, and "
                              "NCCL refuses two ranks on one GPU (\"Duplicate GPU detected\"); use more than 0.5, or "
                              "one worker")
        if self.precision == "bf16" and not self.use_gpu:
            raise ConfigError("train.precision=bf16 autocasts on GPU only; set train.use_gpu=true or precision=fp32")


@dataclass
class SFTConfig:
    """Warm-up: cross-entropy fine-tuning on (problem, reference program) pairs."""

    epochs: float = 8.0
    lr: float = 1e-3
    batch_size: int = 32
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0


@dataclass
class RolloutConfig:
    """Sampling programs from the actor (paper: ~20 samples per problem at temperature 0.6, plus one greedy)."""

    num_samples: int = 8
    problems_per_round: int = 0  # 0 = every training problem each round; else a fresh seeded subset per round
    temperature: float = 0.6
    top_p: float = 0.95
    # Sample among the top_k most likely tokens only (before top_p; 0 = off). 50: the original's generate() kept
    # the library default, so its samples (and the paper's) were drawn with top-k 50. Evaluation samples use it too.
    top_k: int = 50
    max_new_tokens: int = 128
    batch_size_per_worker: int = 32  # prompts per batch a generator takes from the dataset
    # Rows (prompts x samples) per decoder call: a batch is decoded in chunks of at most this many rows, each row
    # holding its own attention caches (evaluation at 200 samples x 16 prompts is 3,200 rows). 0 = the whole batch
    # at once. Samples do not depend on it (keyed sampling); `coderl-ray plan` shows the memory it implies.
    max_rows_per_generate: int = 512
    # Rows per call of the critic scorers scoring a round's programs, and of the old-log-probability pass a one-stage
    # RL command runs on programs scored without them (the pipeline's generators record them while sampling).
    score_batch_size: int = 64
    num_workers: int = 1  # generators: a pool of Ray actors held for the whole run
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # share of a GPU each generator reserves (it computes on one device)
    # "hf": model.generate; "static": static caches, encoder once per prompt, early stop (models/decoding.py).
    decoder: Literal["hf", "static"] = "hf"
    compile: bool = False  # static decoder only: torch.compile the decode step, replayed as a CUDA graph on GPU
    # A custom resource the generators and the critic scorers also request (a small share of one unit each), which
    # pins them to the nodes that advertise it, e.g. `inference` on cluster/local-cluster.sh's inference node.
    resource: str = ""

    def __post_init__(self) -> None:
        if self.compile and self.decoder != "static":
            raise ConfigError("rollout.compile needs rollout.decoder=static (model.generate's compiled static cache "
                              "fails under CUDA graphs in stock transformers)")
        if self.temperature <= 0:
            raise ConfigError("rollout.temperature must be > 0 (the greedy baseline is generated separately)")
        if not 0 < self.top_p <= 1:
            raise ConfigError("rollout.top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ConfigError("rollout.top_k must be >= 0 (0 = no top-k filtering)")
        if self.max_rows_per_generate < 0:
            raise ConfigError("rollout.max_rows_per_generate must be >= 0 (0 = the whole batch in one call)")
        if self.score_batch_size < 1:
            raise ConfigError("rollout.score_batch_size must be >= 1")
        if not 0 <= self.gpus_per_worker <= 1:
            raise ConfigError(f"rollout.gpus_per_worker must lie in [0, 1] (a generator computes on one GPU), got "
                              f"{self.gpus_per_worker}")


@dataclass
class SandboxConfig:
    """Running programs against unit tests on CPU Ray tasks that request a custom resource (docs/sandbox.md).

    Each executor is a Ray actor holding one warm sandbox; it runs ``batch_size`` programs per call, one at a time.
    The pool has up to ``max_tasks_in_flight`` executors (0: one per unit of ``resource`` in the cluster), each with
    at most ``tasks_in_flight_per_worker`` batches queued, which bounds the work in flight to
    ``executors * tasks_in_flight_per_worker * batch_size`` programs.
    """

    # CPU seconds (not wall-clock) per test and for all tests of one program; the wall clock is only a backstop
    # against programs that sleep (docs/sandbox.md#time)
    timeout_s: float = 4.0
    program_timeout_s: float = 20.0
    memory_mb: int = 1024  # address space of a program
    max_output_mb: float = 8.0  # stdout of one test (or everything one process reports); beyond: runtime_error
    max_processes: int = 1  # 1 = a program may not create processes (threads are allowed)
    # auto: each problem's own mode (APPS problems from `coderl-ray convert apps` say "apps"), strict when it says
    # none; strict (training rewards) or apps (APPS's verdicts) for every problem
    compare: Literal["auto", "strict", "apps"] = "auto"
    stop_on_first_failure: bool = False  # CodeRL stops early for speed; run all for per-test results
    tier: Literal["auto", "namespace", "process", "bwrap"] = "auto"  # isolation; auto = namespace where possible
    infra_retries: int = 2  # reruns of a program, with a fresh zygote, when the sandbox itself fails
    resource: str = "sandbox"  # custom resource requested by execution tasks; "" = plain CPUs
    cpus_per_task: float = 1.0
    batch_size: int = 64  # programs per Ray task
    max_tasks_in_flight: int = 0  # most executors; 0 = one per sandbox unit present now; >0 lets an autoscaler add nodes
    tasks_in_flight_per_worker: int = 2  # batches queued per executor (keeps it busy, bounds memory)

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.program_timeout_s <= 0:
            raise ConfigError("sandbox.timeout_s and sandbox.program_timeout_s must be > 0")
        if self.program_timeout_s < self.timeout_s:
            raise ConfigError(f"sandbox.program_timeout_s ({self.program_timeout_s}) is below sandbox.timeout_s "
                              f"({self.timeout_s}): no test could use its own time limit")
        if self.memory_mb < 64:
            raise ConfigError("sandbox.memory_mb must be >= 64 (the interpreter alone needs tens of MB)")
        if self.max_processes < 1 or self.batch_size < 1 or self.tasks_in_flight_per_worker < 1:
            raise ConfigError("sandbox.max_processes, batch_size and tasks_in_flight_per_worker must be >= 1")
        if self.max_tasks_in_flight < 0 or self.infra_retries < 0:
            raise ConfigError("sandbox.max_tasks_in_flight and sandbox.infra_retries must be >= 0")
        if self.max_output_mb <= 0:
            raise ConfigError("sandbox.max_output_mb must be > 0")


@dataclass
class CriticConfig:
    """The critic: a backbone plus an MLP error head (d_model -> head_hidden -> ReLU -> n_classes)."""

    backbone: str = "actor"  # "actor" = start from the SFT actor's weights; or a folder / Hub id (paper: codet5-base)
    n_classes: Literal[2, 4] = 4
    head_hidden: int = 128
    epochs: float = 3.0
    lr: float = 1e-3
    batch_size: int = 32
    include_ground_truth: bool = True  # reference programs join the data as "passed" (paper)
    # The rounds' greedy baseline programs join the sampled ones (real programs of the same policy, with real
    # outcomes); the original trained on sampled programs and references only: false reproduces that.
    include_greedy: bool = True
    # Which problems' programs it trains on: "all"; or "mixed_problems", only the problems whose buffer programs
    # include both a passing and a failing one (their references too). A critic trained on all learns which problems
    # pass; critic sampling needs one that tells one problem's programs apart (docs/benchmarks.md#critic-quality).
    data: Literal["all", "mixed_problems"] = "all"
    # Online loop (rl.loop=online): the critic scorers take the critic's new weights every this many critic steps.
    refresh_steps: int = 5
    # How token logits become a program's: "tokens" = max over the program's own tokens; "all_positions" = max over
    # model.max_target_tokens decoder positions, padding included, as the original code did (seq2seq only). Stored
    # with the critic, so a loaded critic pools as it was trained.
    pooling: Literal["tokens", "all_positions"] = "tokens"
    # The head reads the backbone's states at its LM head's scale (d_model^-0.5 for CodeT5, as the original); false
    # = the raw states (this code before 2026-12-02: the head learns faster at a given lr). Stored with the critic.
    scale_head_input: bool = True
    # The critic that critic sampling reads: 4 = the last round's critic ("passed" probability of its 4-class head);
    # 2 = a binary critic (not passed / passed, as the paper used at inference) that the pipeline trains after the
    # last round (stage critic_binary) on every round's buffer, from the last critic's backbone with a new head.
    inference_classes: Literal[2, 4] = 4
    # The head also reads each program token's log-probability under the backbone's LM head and its gap to the most
    # likely token's (models/critic.py: token_surprise): how unexpected a constant is given the statement. false =
    # the decoder states alone (the paper). Stored with the critic.
    read_logprobs: bool = False
    # Train the backbone with the head (the paper); false = the head alone, the backbone (and so the log-probabilities
    # the head reads) stays the model it was started from, e.g. the SFT actor.
    train_backbone: bool = True
    # Weight of a ranking term added to the cross-entropy: the logistic loss on the log-odds of "passed" over every
    # (passing, failing) pair of programs of one problem in a batch (models/critic.py: pairwise_rank_loss). Batches
    # then hold several programs of a problem (the data is ordered by problem). 0 = cross-entropy alone (the paper).
    rank_weight: float = 0.0
    # Hard negatives: this many mutants of every reference program (one integer literal or operator changed,
    # rl/hard_negatives.py), executed in the sandbox for their labels (a mutant may still pass) by the stage
    # critic_mutants before round 1, join the critic's data every round. 0 = none (the paper).
    mutants_per_program: int = 0

    def __post_init__(self) -> None:
        if self.rank_weight < 0 or self.mutants_per_program < 0:
            raise ConfigError(f"critic.rank_weight ({self.rank_weight}) and critic.mutants_per_program "
                              f"({self.mutants_per_program}) must be >= 0")


@dataclass
class RepairConfig:
    """The repair model of critic sampling (docs/repair.md): reads a problem, a failed program and its error, and
    writes a passing program. Trained after the last RL round (stage repair) on pairs from every round's buffer."""

    enabled: bool = False
    init: str = "actor"  # "actor" = a copy of the last round's actor; or a model folder / Hub id
    epochs: float = 2.0  # passes over the pairs
    lr: float = 1e-3
    batch_size: int = 32
    warmup_ratio: float = 0.05
    max_pairs_per_problem: int = 4  # failed programs per problem, a seeded choice among its distinct ones

    def __post_init__(self) -> None:
        if self.max_pairs_per_problem < 1:
            raise ConfigError(f"repair.max_pairs_per_problem must be >= 1, got {self.max_pairs_per_problem}")
        if self.epochs <= 0 or self.batch_size < 1:
            raise ConfigError("repair.epochs must be > 0 and repair.batch_size >= 1")


@dataclass
class RLConfig:
    """Actor-critic fine-tuning rounds."""

    rounds: int = 2
    steps_per_round: int = 60
    lr: float = 5e-4
    batch_size: int = 32
    alternate_ce: bool = True  # cross-entropy on ground truth alternates with RL (paper); False = RL steps only
    # How they alternate. "micro_batch" (the original code's): every optimizer step takes one CE batch and one RL
    # batch of rl.batch_size rows each, loss = CE/2 + RL/2, as the original's gradient accumulation summed CE and
    # RL micro-batches. "step": even steps pure CE, odd steps pure RL (half the rows per step).
    alternation: Literal["micro_batch", "step"] = "micro_batch"
    # How a sampled program's advantage is computed (docs/training.md, "RL algorithms"; rl/returns.group_advantages):
    # "coderl" = its reward minus the greedy program's (the paper's relative return); "grpo" = its reward normalised
    # within the problem's group of samples, (r - mean) / std; "rloo" = its reward minus the mean of the group's
    # other samples. GRPO and RLOO need no greedy program: the rollout draws one more sample in its place, so every
    # algorithm generates and runs the same number of programs (rollout.num_samples + 1 per problem).
    algorithm: Literal["coderl", "grpo", "rloo"] = "coderl"
    # Weight each token's advantage by the critic's probability of the program's actual outcome at that token (the
    # paper's token-level return); false = the same advantage on every token. Unset = the algorithm's own: true for
    # coderl, false for grpo and rloo (true with them is a combination of ours: group advantages, critic's weights).
    # A run whose RL step reads no critic trains none unless critic sampling or the binary critic needs one
    # (registry.needs_critic), in both loops.
    use_critic: bool | None = None
    ce_only: bool = False  # control arm: every step is cross-entropy on ground truth (attributes the RL gain)
    # Score sampled programs under the tempered policy that drew them (logits / rollout.temperature), as verl and
    # OpenRLHF do. False = plain log p (the paper's notation), which at temperature < 1 is off-policy: see
    # docs/training.md for why that makes the greedy baseline flatten the policy.
    on_policy_logprobs: bool = True
    # PPO-style trust region on the RL steps: a token's probability stops being pushed once it has moved this far
    # (as a ratio) from where the round started. 0 = the paper's unbounded loss; docs/training.md says why not.
    clip_ratio: float = 0.2
    # "staged" (the original CodeRL's, the default): each round samples every program, then trains the critic, scores
    # and runs RL. "online": generation, execution, critic scoring, critic training and RL overlap, the actor
    # publishing its weights after every step (docs/training.md, "The online loop"). Both run on persistent roles.
    loop: Literal["staged", "online"] = "staged"
    # Online loop: generation runs at most this many actor versions (RL steps) ahead of training, and a step trains
    # only on programs sampled by a policy at most this many versions old; older ones are dropped and counted. It
    # must cover a few work items' worth of steps (rl.steps_per_round x rollout.batch_size_per_worker /
    # problems per round; 4.8 in the demo), or generation cannot run ahead of training and rows age out after one
    # or two steps. The staged loop's equivalent is rl.steps_per_round (a round trains that many steps on samples
    # of the round's first policy).
    max_staleness: int = 8
    # N > 0: N seeded training problems that every round samples (within rollout.problems_per_round) and every
    # evaluation after SFT scores next to the test split, with the same sampling keys in every run of a seed: pass@1
    # on the RL stage's own training problems, and on those of them without a reference solution (only RL learns
    # those); eval info "groups" (rl/tracked.py). 0 = off.
    tracked_problems: int = 0

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ConfigError("rl.rounds must be >= 0")
        if self.use_critic is None:
            self.use_critic = self.algorithm == "coderl"
        if self.tracked_problems < 0:
            raise ConfigError(f"rl.tracked_problems must be >= 0, got {self.tracked_problems}")
        if self.max_staleness < 0:
            raise ConfigError(f"rl.max_staleness must be >= 0 (0 = synchronous), got {self.max_staleness}")
        if not 0 <= self.clip_ratio < 1:
            raise ConfigError(f"rl.clip_ratio must lie in [0, 1), got {self.clip_ratio}")


@dataclass
class EvalConfig:
    """pass@k on the test split."""

    num_samples: int = 10
    ks: list[int] = field(default_factory=lambda: [1, 5])
    temperature: float = 0.6
    top_p: float = 0.95
    every_round: bool = True  # evaluate after SFT and after each RL round, not only at the end

    def __post_init__(self) -> None:
        bad = [k for k in self.ks if k < 1 or k > self.num_samples]
        if bad:
            raise ConfigError(f"eval.ks {bad} must lie in 1..eval.num_samples ({self.num_samples})")


@dataclass
class PlanConfig:
    """The pre-flight memory check (`coderl-ray plan`, and the pipeline before any work; see coderl_ray/plan.py)."""

    # Memory of one GPU in GiB (2**30 bytes), as torch.cuda reports it: an "80 GB" H100 or A100 has ~79.2.
    gpu_memory_gb: float = 80.0
    # Share of it kept free for what the estimate leaves out: the CUDA context and NCCL buffers (~1 GiB), the
    # caching allocator's fragmentation, torch.compile's workspaces.
    headroom: float = 0.1
    check: bool = True  # the pipeline stops before any work when a stage does not fit; false = warn and run
    # GPUs in the cluster (0 = unknown). > 0: the plan places the run's roles, which all hold their GPU shares for
    # the whole run, on these GPUs as Ray would (one node, in the order the run starts them), fails a role that
    # would find no room, and checks the memory of the roles that share each GPU against gpu_memory_gb. 0: each
    # role must fit in its own share of a GPU (which holds wherever Ray puts it).
    cluster_gpus: int = 0
    # CPUs of the machine, for a one-machine run (0 = unknown, not checked): the plan reports whether the roles'
    # CPU reservations, one CPU for Ray Data's tasks and a sandbox executor fit.
    cluster_cpus: int = 0

    def __post_init__(self) -> None:
        if self.cluster_gpus < 0 or self.cluster_cpus < 0:
            raise ConfigError("plan.cluster_gpus and plan.cluster_cpus must be >= 0 (0 = unknown, not checked)")
        if self.gpu_memory_gb <= 0:
            raise ConfigError("plan.gpu_memory_gb must be > 0 (the memory of one GPU in GiB)")
        if not 0 <= self.headroom < 1:
            raise ConfigError(f"plan.headroom must lie in [0, 1), got {self.headroom}")


@dataclass
class CSConfig:
    """Critic sampling at inference (CodeRL Sec. 3.3; docs/inference.md).

    Every problem gets exactly ``budget`` generated programs (the k of n@k), whatever happens to it: pass 0 samples
    ``first_samples`` of them plainly, and each later pass generates an even share of the rest - refining the seeds of
    programs that pass the example tests, else repairing the failed programs the critic rates best (with a repair
    model), else sampling plainly. The generators are a pool of ``rollout.num_workers`` (``rollout.cpus_per_worker``
    / ``gpus_per_worker`` each, ``rollout.batch_size_per_worker`` programs per generate() call, at most
    ``rollout.max_new_tokens`` tokens per program); the critic scorers a pool of ``critic_num_workers``.
    """

    enabled: bool = True  # pipeline: critic sampling on the test split after the last round (needs rl.rounds >= 1)
    budget: int = 10  # programs generated per problem (k of n@k), the same for every strategy compared
    passes: int = 2  # generation passes; 1 = plain sampling of the whole budget, ranked (the filter+critic baseline)
    first_samples: int = 5  # plain samples per problem in pass 0; the rest is split evenly over the later passes
    seeds_top_k: int = 2  # refining: continue from the best seeds of a problem (one per program, highest value first)
    repair_candidates: int = 2  # repairing: repair the failed programs of a problem the critic rates best
    temperature: float = 0.6
    top_p: float = 0.95
    submissions: list[int] = field(default_factory=lambda: [1, 5])  # n of n@k: programs submitted per problem
    baseline: bool = True  # pipeline: also plain sampling at the same budget (random / filter / filter+critic rows)
    critic_batch_size: int = 64  # programs per critic forward pass
    # The critic scorers: one pool held for the whole run, which also scores the RL rounds' programs (at
    # rollout.score_batch_size rows per call) and the online loop's.
    critic_num_workers: int = 1
    critic_cpus_per_worker: float = 1.0
    critic_gpus_per_worker: float = 0.0

    def __post_init__(self) -> None:
        if self.passes < 1 or self.first_samples < 1:
            raise ConfigError("cs.passes and cs.first_samples must be >= 1")
        if self.seeds_top_k < 1 or self.repair_candidates < 1:
            raise ConfigError("cs.seeds_top_k and cs.repair_candidates must be >= 1")
        need = self.budget if self.passes == 1 else self.first_samples + self.passes - 1
        if self.budget < need or self.budget < 1:
            raise ConfigError(f"cs.budget (--budget) {self.budget} is smaller than the passes need: "
                              f"cs.first_samples={self.first_samples} programs in pass 0 plus at least one in each of "
                              f"the {self.passes - 1} later passes = {need}")
        bad = [n for n in self.submissions if n < 1 or n > self.budget]
        if not self.submissions or bad:
            raise ConfigError(f"cs.submissions (--submissions) {self.submissions} must be a non-empty list of n in "
                              f"1..cs.budget ({self.budget})")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ConfigError("cs.temperature must be > 0 and cs.top_p in (0, 1]")
        if self.critic_num_workers < 1 or self.critic_batch_size < 1:
            raise ConfigError("cs.critic_num_workers and cs.critic_batch_size must be >= 1")
        if not 0 <= self.critic_gpus_per_worker <= 1:
            raise ConfigError(f"cs.critic_gpus_per_worker must lie in [0, 1] (a scorer computes on one GPU), got "
                              f"{self.critic_gpus_per_worker}")


@dataclass
class PipelineConfig:
    """Everything one run of the pipeline needs."""

    output_dir: str = "outputs/tiny"
    seed: int = 0
    ray_address: str = ""  # "" = a running cluster if there is one, else Ray in-process; "local" = always in-process
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    cs: CSConfig = field(default_factory=CSConfig)
    repair: RepairConfig = field(default_factory=RepairConfig)

    def __post_init__(self) -> None:
        if self.rl.loop == "online":
            if self.rl.rounds < 1:
                raise ConfigError("rl.loop=online needs rl.rounds >= 1 (the online loop runs the rounds' programs "
                                  "and steps)")
            if self.critic.data != "all":
                raise ConfigError("critic.data=mixed_problems needs rl.loop=staged: the online critic trains on the "
                                  "buffer as it grows, before a problem's programs are all known")
            # The online critic takes one batch of freshly executed programs per step (online/loop.py), not a
            # dataset ordered by problem, and no stage writes mutants before it starts.
            if self.critic.rank_weight > 0:
                raise ConfigError(f"critic.rank_weight={self.critic.rank_weight} needs rl.loop=staged: the online "
                                  "critic trains on programs in the order they arrive, not in batches grouped by "
                                  "problem; set critic.rank_weight=0 or rl.loop=staged")
            if self.critic.mutants_per_program > 0:
                raise ConfigError(f"critic.mutants_per_program={self.critic.mutants_per_program} needs "
                                  "rl.loop=staged: the online critic trains on the programs the rollout executes and "
                                  "does not read the critic_mutants stage's programs; set "
                                  "critic.mutants_per_program=0 or rl.loop=staged")
            if self.critic.refresh_steps < 1:
                raise ConfigError("critic.refresh_steps must be >= 1")
        if self.critic.rank_weight > 0 and self.train.bucket_batches > 1:
            raise ConfigError("critic.rank_weight > 0 groups the critic's batches by problem, which "
                              "train.bucket_batches (regrouping by length) would undo: set one of them to 0")
        # Both learn from the rounds' replay buffer: without a round there is nothing to train them on.
        if self.rl.rounds == 0 and self.repair.enabled:
            raise ConfigError("repair.enabled needs rl.rounds >= 1: the repair model learns from the failed and "
                              "passing programs of the rounds' replay buffer")
        if self.rl.rounds == 0 and self.critic.inference_classes == 2:
            raise ConfigError("critic.inference_classes=2 needs rl.rounds >= 1: the binary critic is trained on the "
                              "rounds' replay buffer")


# --- loading ---------------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats. Errors name ``key``."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' is a section; expected a mapping, got {value!r}")
        return _build(tp, value, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"config key '{key}' must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return None
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}' expects {_type_name(tp)}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' expects a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
            # PyYAML follows YAML 1.1, where `3e-4` (no dot) is a string; everyone means the number.
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' expects a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' expects an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' expects true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' expects a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}' has an unsupported type {tp!r}")


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"unknown config key '{key}'; {cls.__name__} has: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config section '{prefix or cls.__name__}': {exc}") from None


_SCIENTIFIC = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def config_from_dict(data: dict[str, Any], cls: type = PipelineConfig) -> Any:
    return _build(cls, data or {})


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides to a nested mapping; values are parsed as YAML (``3``, ``0.5``, ``[1, 5]``)."""
    data = _deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. rl.rounds=3)")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from None
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: '{part}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def _deepcopy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deepcopy(v) if isinstance(v, dict) else v for k, v in data.items()}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                cls: type = PipelineConfig) -> Any:
    """Load a YAML config (or the defaults when ``path`` is None) and apply ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
    data = apply_overrides(data, overrides or [])
    try:
        return config_from_dict(data, cls)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def diff_configs(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Keys whose values differ between two config mappings (dotted names)."""
    out = []
    for key in sorted(set(old) | set(new)):
        name = f"{prefix}.{key}" if prefix else key
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(diff_configs(a, b, name))
        elif a != b:
            out.append(name)
    return out
