"""Tiny real transformers models: actor (seq2seq and causal), critic, log-probs, generation."""

import math

import pytest
import torch

from coderl_ray.data.prompts import build_prompt
from coderl_ray.models.actor import load_actor
from coderl_ray.models.batching import cross_entropy, encode_program, encode_prompt, pad_batch, token_logprobs
from coderl_ray.models.critic import NotACriticError, build_critic, load_critic
from coderl_ray.models.tokenizer import load_tokenizer
from coderl_ray.rollout.generator import ProgramGenerator, SamplingParams
from tests.helpers import tiny_actor_dir, tiny_suite


@pytest.fixture(scope="module", params=["seq2seq", "causal"])
def actor_dir(request, tmp_path_factory):
    return tiny_actor_dir(tmp_path_factory.mktemp(request.param), request.param)


def _batch(tok, problems):
    prompts = [encode_prompt(tok, build_prompt(p), 256) for p in problems]
    programs = [encode_program(tok, p["solutions"][0], 128) for p in problems]
    return pad_batch(prompts, programs, tok.pad_token_id)


def test_tokenizer_round_trips_code(actor_dir):
    tok = load_tokenizer(actor_dir)
    code = tiny_suite()[0][0]["solutions"][0]
    ids = encode_program(tok, code, 512)
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == code


def test_padding_does_not_change_log_probs(actor_dir):
    tok, model = load_tokenizer(actor_dir), load_actor(actor_dir).eval()
    problems = tiny_suite()[0][:3]
    together = token_logprobs(model, _batch(tok, problems))
    for i, p in enumerate(problems):
        alone = token_logprobs(model, _batch(tok, [p]))
        n = alone.shape[1]
        assert torch.allclose(together[i, :n], alone[0], atol=1e-4)
        assert torch.all(together[i, n:] == 0)


def test_one_sft_step_changes_every_parameter_and_lowers_the_loss(actor_dir):
    tok, model = load_tokenizer(actor_dir), load_actor(actor_dir)
    batch = _batch(tok, tiny_suite()[0][:8])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(3):
        loss = cross_entropy(token_logprobs(model, batch), batch["program_mask"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []
    assert losses[-1] < losses[0]


def test_generated_tokens_are_the_ones_the_log_probs_score(actor_dir):
    """The RL loss must score exactly the tokens generate() produced: compare with generate's own step scores."""
    gen = ProgramGenerator(actor_dir, device="cpu")
    problems = tiny_suite()[0][:2]
    samples = gen.generate(problems, SamplingParams(num_samples=2, max_new_tokens=12))
    assert [s["is_greedy"] for s in samples] == [False, False, True] * 2
    assert len({s["sample_id"] for s in samples}) == 6
    for s in samples:
        assert gen.tokenizer.decode(s["token_ids"], skip_special_tokens=True) == s["code"]

    problem, greedy = problems[0], samples[2]
    enc = gen._prompts([problem], 256)
    with torch.no_grad():
        out = gen.model.generate(**enc, do_sample=False, max_new_tokens=12, output_scores=True,
                                 return_dict_in_generate=True, pad_token_id=gen.tokenizer.pad_token_id,
                                 eos_token_id=gen.tokenizer.eos_token_id)
        step_logp = torch.stack([torch.log_softmax(x[0].float(), -1) for x in out.scores])  # [steps, V]
        n = len(greedy["token_ids"])
        expected = step_logp[torch.arange(n), torch.tensor(greedy["token_ids"])]
        assert torch.equal(step_logp[:n].argmax(-1), torch.tensor(greedy["token_ids"]))
        prompt = encode_prompt(gen.tokenizer, build_prompt(problem), 256)
        scored = token_logprobs(gen.model, pad_batch([prompt], [greedy["token_ids"]], gen.tokenizer.pad_token_id))
    assert torch.allclose(scored[0], expected, atol=1e-4)


def test_tempered_log_probs_are_the_sampler_distribution(actor_dir):
    """At temperature T the RL step must score a sampled program under softmax(logits / T), the distribution
    generate() drew it from (the on-policy log-probabilities); T = 1 is the plain model."""
    gen = ProgramGenerator(actor_dir, device="cpu")
    problem = tiny_suite()[0][0]
    enc = gen._prompts([problem], 256)
    torch.manual_seed(0)
    with torch.no_grad():
        out = gen.model.generate(**enc, do_sample=True, temperature=0.5, top_k=0, top_p=1.0, max_new_tokens=10,
                                 output_scores=True, return_dict_in_generate=True,
                                 pad_token_id=gen.tokenizer.pad_token_id, eos_token_id=gen.tokenizer.eos_token_id)
        n = len(out.scores)
        ids = out.sequences[0, -n:]
        sampler_logp = torch.stack([torch.log_softmax(x[0].float(), -1) for x in out.scores])[torch.arange(n), ids]
        prompt = encode_prompt(gen.tokenizer, build_prompt(problem), 256)
        batch = pad_batch([prompt], [ids.tolist()], gen.tokenizer.pad_token_id)
        tempered = token_logprobs(gen.model, batch, temperature=0.5)[0]
        plain = token_logprobs(gen.model, batch)[0]
    assert torch.allclose(tempered, sampler_logp, atol=1e-4)
    assert not torch.allclose(plain, sampler_logp, atol=1e-2)


def test_critic_saves_and_loads_as_one_folder(actor_dir, tmp_path):
    tok = load_tokenizer(actor_dir)
    critic = build_critic(actor_dir, n_classes=4, head_hidden=16).eval()
    batch = _batch(tok, tiny_suite()[0][:3])
    args = (batch["input_ids"], batch["attention_mask"], batch["program_ids"], batch["program_mask"])
    logits = critic(*args)
    assert logits.shape == (3, batch["program_ids"].shape[1], 4)
    critic.save_pretrained(tmp_path / "critic")
    again = load_critic(tmp_path / "critic").eval()
    assert torch.allclose(again(*args), logits, atol=1e-5)
    with pytest.raises(NotACriticError, match="not a critic"):
        load_critic(actor_dir)


def test_critic_head_matches_a_hand_computation(actor_dir):
    """Paper head, d_model -> hidden -> ReLU -> classes, on each token state; the program's logits are the max."""
    from coderl_ray.models.critic import critic_loss, program_logits

    critic = build_critic(actor_dir, n_classes=2, head_hidden=2)
    first, relu, second = critic.head
    assert isinstance(relu, torch.nn.ReLU)
    assert first.in_features == critic.backbone.get_input_embeddings().embedding_dim  # d_model
    assert build_critic(actor_dir).head[0].out_features == 128  # the paper's hidden size by default
    d = first.in_features
    with torch.no_grad():
        first.weight.zero_()
        first.weight[0, 0], first.weight[1, 1] = 1.0, -1.0  # hidden = relu([s0, -s1] + b1)
        first.bias.copy_(torch.tensor([0.0, 0.5]))
        second.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        second.bias.copy_(torch.tensor([0.0, -1.0]))
    states = torch.zeros(1, 3, d)
    states[0, 0, :2] = torch.tensor([3.0, 1.0])  # hidden relu([3, -1 + 0.5]) = [3, 0] -> logits [3, 0*2 - 1]
    states[0, 1, :2] = torch.tensor([-1.0, -2.0])  # hidden relu([-1, 2 + 0.5]) = [0, 2.5] -> logits [0, 4]
    states[0, 2, :2] = torch.tensor([50.0, -50.0])  # padding: must not count
    token_logits = critic.head(states)
    assert torch.allclose(token_logits[0, :2], torch.tensor([[3.0, -1.0], [0.0, 4.0]]))
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(program_logits(token_logits, mask), torch.tensor([[3.0, 4.0]]))
    # Cross-entropy of [3, 4] against "passed" (class 1 of the binary critic): log(1 + e^(3 - 4)).
    expected = math.log(1 + math.exp(-1.0))
    assert critic_loss(token_logits, mask, torch.tensor([1])).item() == pytest.approx(expected, rel=1e-6)
