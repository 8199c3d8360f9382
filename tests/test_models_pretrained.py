"""Paper-style checkpoints (CodeT5) and causal LMs (GPT-2, Qwen2) from local folders and offline Hub ids, with the
real tokenizers in shared data: SFT, sampling (both decoders), critic and the RL step on each architecture."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from coderl_ray.data.prompts import build_prompt
from coderl_ray.models.actor import load_actor
from coderl_ray.models.batching import encode_program, encode_prompt, pad_batch
from coderl_ray.models.critic import NotACriticError, build_critic, load_critic
from coderl_ray.models.decoding import StaticDecoder, top_p_filter
from coderl_ray.models.tokenizer import load_tokenizer
from coderl_ray.rl.replay_buffer import ground_truth_rows
from coderl_ray.rollout.generator import ProgramGenerator, SamplingParams
from coderl_ray.train.loop import LoopConfig, run_loop
from coderl_ray.models.critic import score_programs
from tests.conftest import ROOT
from tests.helpers import tiny_suite
from tests.tiny_models import codet5_dir, gpt2_dir, hub_cache, qwen2_dir

BUILDERS = {"codet5": codet5_dir, "gpt2": gpt2_dir, "qwen2": qwen2_dir}


@pytest.fixture(scope="module", params=list(BUILDERS))
def model_dir(request, tmp_path_factory, shared_data):
    return BUILDERS[request.param](tmp_path_factory.mktemp(request.param), shared_data)


def _cycle(rows, size):
    while True:
        for i in range(0, len(rows) - size + 1, size):
            yield rows[i: i + size]


def test_tokenizers_from_shared_data_frame_prompts_like_their_models(model_dir):
    tok = load_tokenizer(model_dir)
    ids = encode_prompt(tok, build_prompt(tiny_suite()[0][0]), 64)
    assert len(ids) == 64  # cut from the left to the budget, specials included
    if "codet5" in model_dir.name:
        # CodeT5 was pretrained on "<s> text </s>" encoder inputs; the cut keeps both specials and "ANSWER:".
        assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        assert tok.decode(ids[1:-1]).endswith("\nANSWER:\n")
    else:
        # GPT-2 has no pad token: padding reuses EOS (always masked), and prompts get no specials.
        assert tok.pad_token_id == tok.eos_token_id == 50256
        assert tok.decode(ids).endswith("\nANSWER:\n")
    code = "def f(x):\n    return x + 1\n"
    assert tok.decode(encode_program(tok, code, 64), skip_special_tokens=True) == code


@pytest.mark.parametrize("family", ["codet5", "qwen2"])  # GPT-2 shares Qwen2's causal path
def test_sft_sampling_critic_and_rl_step_run_on_each_architecture(family, tmp_path, shared_data):
    model_dir = BUILDERS[family](tmp_path, shared_data)
    tok = load_tokenizer(model_dir)
    problems = tiny_suite()[0][:6]
    gt = ground_truth_rows(problems, tok, 128, 48)
    torch.manual_seed(0)
    model = load_actor(model_dir)
    sft = LoopConfig(objective="sft", init_path=str(model_dir), steps=3, batch_size=3, lr=1e-2, warmup_ratio=0.0)
    hist = run_loop(sft, model, _cycle(gt, 3), tok.pad_token_id)
    assert [m["step"] for m in hist] == [1, 2, 3] and all(np.isfinite(m["loss"]) for m in hist)
    model.save_pretrained(tmp_path / "sft")
    tok.save_pretrained(tmp_path / "sft")

    gen = ProgramGenerator(tmp_path / "sft", device="cpu")
    samples = {}
    for decoder in ("hf", "static"):
        params = SamplingParams(num_samples=2, max_new_tokens=8, max_source_tokens=128, decoder=decoder)
        samples[decoder] = gen.generate(problems[:2], params)
        assert [s["is_greedy"] for s in samples[decoder]] == [False, False, True] * 2
        assert all(1 <= len(s["token_ids"]) <= 8 for s in samples[decoder])
    # The greedy baselines of the two decoders are the same programs.
    assert [s["token_ids"] for s in samples["hf"] if s["is_greedy"]] == \
        [s["token_ids"] for s in samples["static"] if s["is_greedy"]]

    # Critic on this backbone, binary (not passed / passed), scores the samples token by token.
    critic = build_critic(tmp_path / "sft", n_classes=2, head_hidden=8)
    prompt = {p["problem_id"]: encode_prompt(tok, build_prompt(p), 128) for p in problems}
    rows = [{**s, "prompt_ids": prompt[s["problem_id"]]} for s in samples["static"]]
    logits = [s.token_logits for s in score_programs(critic.eval(), rows, tok.pad_token_id)]
    assert [lg.shape for lg in logits] == [(len(r["token_ids"]), 2) for r in rows]

    # RL steps on the sampled programs with those critic logits, each summed with a cross-entropy batch.
    for i, (r, lg) in enumerate(zip(rows, logits)):
        r.update(outcome=["passed", "failed", "compile_error"][i % 3], relative_return=[1.3, -0.3, 0.0][i % 3],
                 critic_logits=lg.reshape(-1).tolist())
    rl_rows = [r for r in rows if not r["is_greedy"]]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rl = LoopConfig(objective="rl", init_path=str(model_dir), steps=2, batch_size=2, lr=1e-2, n_classes=2,
                    warmup_ratio=0.0)
    hist = run_loop(rl, model, _cycle(rl_rows, 2), tok.pad_token_id, ce_batches=_cycle(gt, 2))
    assert all("rl_loss" in m and "ce_loss" in m for m in hist)
    assert np.isfinite(hist[1]["rl_loss"])
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_critic_is_invariant_to_left_padding_and_saves_as_one_folder(model_dir, tmp_path):
    """A row's critic logits do not depend on the other rows of its batch (causal backbones need position ids that
    skip the prompt's left padding), and the folder round-trips; a model folder is refused as a critic."""
    tok = load_tokenizer(model_dir)
    problems = tiny_suite()[0][:3]
    prompts = [encode_prompt(tok, build_prompt(p), 40 + 20 * i) for i, p in enumerate(problems)]
    programs = [encode_program(tok, p["solutions"][0], 24) for p in problems]
    critic = build_critic(model_dir, n_classes=4, head_hidden=8).eval()
    batch = pad_batch(prompts, programs, tok.pad_token_id)
    with torch.no_grad():
        together, pooled = critic.score(**batch)
        for i in range(3):
            alone = critic(**pad_batch(prompts[i:i + 1], programs[i:i + 1], tok.pad_token_id))[0]
            assert torch.allclose(together[i, : len(programs[i])], alone, atol=1e-4)
    assert pooled.shape == (3, 4)
    critic.save_pretrained(tmp_path / "critic")
    again = load_critic(tmp_path / "critic").eval()
    with torch.no_grad():
        assert torch.allclose(again(**batch), together, atol=1e-5)
    with pytest.raises(NotACriticError, match="critic_config.json and critic_head.safetensors"):
        load_critic(model_dir)


def test_untied_lm_head_is_frozen_in_a_critic(tmp_path, shared_data):
    # Qwen2 here has a separate LM head: the critic never uses it, and DDP would wait for its gradient forever.
    critic = build_critic(qwen2_dir(tmp_path, shared_data), n_classes=4)
    assert not critic.backbone.lm_head.weight.requires_grad
    assert critic.backbone.get_input_embeddings().weight.requires_grad
    tied = build_critic(gpt2_dir(tmp_path, shared_data), n_classes=4)
    assert tied.backbone.lm_head.weight.requires_grad  # it is the input embedding


def test_static_decoder_reproduces_generate_greedy_and_its_top_p(model_dir):
    from transformers.generation.logits_process import TopPLogitsWarper

    tok, model = load_tokenizer(model_dir), load_actor(model_dir).eval()
    texts = ["def add(a, b):\n", "print('hello world')  # a longer prompt\n", "x ="]
    ids = [encode_prompt(tok, t, 64) for t in texts]
    s = max(map(len, ids))
    inp = torch.tensor([[tok.pad_token_id] * (s - len(x)) + x for x in ids])
    mask = torch.tensor([[0] * (s - len(x)) + [1] * len(x) for x in ids])
    with torch.no_grad():
        ref = model.generate(input_ids=inp, attention_mask=mask, do_sample=False, max_new_tokens=12,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    ref = ref[:, 1:] if model.config.is_encoder_decoder else ref[:, s:]
    eos = tok.eos_token_id
    expected = [r[: r.index(eos) + 1] if eos in r else r for r in ref.tolist()]
    decoder = StaticDecoder(model, pad_prompts_to=16, stop_check_every=4)
    for _ in range(2):  # the second call reuses the workspace (caches reset in place)
        got = decoder.generate(inp, mask, num_samples=2, max_new_tokens=12, greedy=True, eos_id=eos,
                               pad_id=tok.pad_token_id)
        assert got[0::2] == expected and got[1::2] == expected

    logits = torch.randn(4, 50) * 3
    assert torch.equal(top_p_filter(logits, 0.9), TopPLogitsWarper(0.9)(None, logits.clone()))


def test_paper_checkpoints_load_by_hub_id_offline(tmp_path, shared_data):
    """`Salesforce/codet5-large-ntp-py` (actor) and `Salesforce/codet5-base` (critic backbone) by Hub id, as on a
    machine that downloaded them once: the Hugging Face cache layout, HF_HUB_OFFLINE=1, no code change."""
    cache = tmp_path / "hub"
    hub_cache(cache, "Salesforce/codet5-large-ntp-py", codet5_dir(tmp_path / "actor", shared_data))
    hub_cache(cache, "Salesforce/codet5-base", codet5_dir(tmp_path / "critic", shared_data, d_model=16))
    script = (
        "from coderl_ray.models.actor import load_actor\n"
        "from coderl_ray.models.critic import build_critic\n"
        "from coderl_ray.models.tokenizer import load_tokenizer\n"
        "actor = load_actor('Salesforce/codet5-large-ntp-py')\n"
        "tok = load_tokenizer('Salesforce/codet5-large-ntp-py')\n"
        "critic = build_critic('Salesforce/codet5-base', n_classes=2)\n"
        "print(type(actor).__name__, len(tok), actor.config.d_model, critic.backbone.config.d_model)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["T5ForConditionalGeneration", "32100", "32", "16"]
