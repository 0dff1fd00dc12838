"""Parity of carerft.algos with TRL 1.16's GRPOTrainer on fixed tensors (TRL is a test-only dependency).

How TRL's own code is called: a real `GRPOTrainer` is built on a tiny config-built Qwen2 model (offline), once per
option set, so every attribute comes from TRL's `__init__`. For the loss we call its `_compute_loss(model, inputs)`
with fixed `inputs` and replace only the instance's `_get_per_token_logps_and_entropies` (the model forward) by a
function returning our fixed `logp`; everything after it (ratio, clipping, KL, aggregation) is TRL's code
(trl/trainer/grpo_trainer.py, `_compute_loss`). The model is in eval mode, where TRL applies no gradient-accumulation
or multi-step normalisation. For the advantages we call `_generate_and_score_completions` with a reward function that
returns fixed rewards, so TRL's own group scaling (`scale_rewards`) produces them.

Options matched, named in each test: loss_type, importance_sampling_level, epsilon / epsilon_high, beta,
use_bias_correction_kl=False (TRL's default True multiplies k3 by the ratio), scale_rewards.
"""
import math, warnings
import pytest
import torch

trl = pytest.importorskip('trl')
from carerft.algos import GRPO, DAPO, GSPO, group_advantages
from carerft.divergences import NoKL, RKL

N, T, G = 6, 5, 3

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A tiny Qwen2 model (saved, so TRL can rebuild a reference when beta != 0) and a char-level tokenizer."
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    from datasets import Dataset
    vocab = {c: i for i, c in enumerate(['<pad>', '<eos>'] + list('abcdefgh '))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token='<pad>')); tok.pre_tokenizer = pre_tokenizers.Split('', 'isolated')
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token='<pad>', eos_token='<eos>', padding_side='left')
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=64, pad_token_id=0, eos_token_id=1)
    path = tmp_path_factory.mktemp('tiny_qwen2')
    Qwen2ForCausalLM(cfg).save_pretrained(path); tokenizer.save_pretrained(path)
    dataset = Dataset.from_dict({'prompt': ['ab', 'cd']})
    return path, tokenizer, dataset, tmp_path_factory.mktemp('trl_out')

def make_trainer(tiny, reward=None, **options):
    "A real GRPOTrainer with the given GRPOConfig options (CPU, fp32, no checkpointing, no logging)."
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer
    path, tokenizer, dataset, out = tiny
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        args = GRPOConfig(output_dir=str(out), num_generations=G, per_device_train_batch_size=N, max_completion_length=4,
                          use_cpu=True, bf16=False, gradient_checkpointing=False, report_to=[], **options)
        trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=reward or (lambda completions, **kw: [0.0] * len(completions)),
                              args=args, train_dataset=dataset, processing_class=tokenizer)
    return trainer

def fixed_tensors(seed, eps_scale=0.3):
    "Fixed float32 inputs with off-policy old_logp (both clip sides hit) and a ragged mask."
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(N, T, generator=g) * 3 - 0.05
    old_logp = logp + eps_scale * torch.randn(N, T, generator=g)
    ref_logp = logp + torch.randn(N, T, generator=g)
    adv = torch.randn(N, generator=g)
    mask = (torch.arange(T) < torch.tensor([[5], [3], [1], [4], [5], [2]])).float()
    return logp, old_logp, ref_logp, adv, mask

def trl_loss(trainer, logp, old_logp, ref_logp, adv, mask):
    "TRL's `_compute_loss` on fixed tensors; returns (loss, d loss / d logp, TRL's logged metrics)."
    lp = logp.clone().requires_grad_()
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (lp, torch.zeros_like(lp), None)  # the model forward
    trainer.model.eval()                                  # no accumulation / steps_per_generation normalisation
    trainer._metrics['eval'].clear()
    inputs = dict(prompt_ids=torch.ones(N, 2, dtype=torch.long), prompt_mask=torch.ones(N, 2, dtype=torch.long),
                  completion_ids=torch.ones(N, T, dtype=torch.long), completion_mask=mask.long(), advantages=adv,
                  old_per_token_logps=old_logp, ref_per_token_logps=ref_logp, num_items_in_batch=mask.sum())
    loss = trainer._compute_loss(trainer.model, inputs)
    (grad,) = torch.autograd.grad(loss, lp)
    return loss.detach(), grad, {k: v[-1] for k, v in trainer._metrics['eval'].items()}

def ours(algo, reg, logp, old_logp, ref_logp, adv, mask):
    lp = logp.clone().requires_grad_()
    loss, stats = algo.loss(lp, old_logp, ref_logp, adv, mask, reg)
    (grad,) = torch.autograd.grad(loss, lp)
    return loss.detach(), grad, stats

def check(trainer, algo, reg, seed, eps_scale=0.3):
    t = fixed_tensors(seed, eps_scale)
    l_trl, g_trl, m_trl = trl_loss(trainer, *t)
    l_us, g_us, s_us = ours(algo, reg, *t)
    torch.testing.assert_close(l_us, l_trl, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g_us, g_trl, atol=1e-7, rtol=1e-5)
    assert g_us.abs().sum() > 0
    assert s_us['clip_low_frac'] == pytest.approx(m_trl['clip_ratio/low_mean'], abs=1e-6)
    assert s_us['clip_high_frac'] == pytest.approx(m_trl['clip_ratio/high_mean'], abs=1e-6)
    assert s_us['clip_frac'] == pytest.approx(m_trl['clip_ratio/region_mean'], abs=1e-6)
    if 'kl' in m_trl: assert s_us['penalty'] == pytest.approx(reg.beta * m_trl['kl'], rel=1e-5)
    return s_us

@pytest.mark.parametrize('beta', [0.0, 0.04])
def test_grpo_matches_trl_grpo(tiny, beta):
    "GRPO(eps=0.2) + RKL(beta) == TRL loss_type='grpo', importance_sampling_level='token', epsilon=0.2, beta, use_bias_correction_kl=False."
    trainer = make_trainer(tiny, loss_type='grpo', importance_sampling_level='token', epsilon=0.2, beta=beta, use_bias_correction_kl=False)
    s = check(trainer, GRPO(eps=0.2), RKL(beta) if beta else NoKL(), seed=0)
    assert s['clip_low_frac'] > 0 and s['clip_high_frac'] > 0

@pytest.mark.parametrize('beta', [0.0, 0.04])
def test_dapo_matches_trl_dapo(tiny, beta):
    "DAPO(0.2, 0.28) + RKL(beta) == TRL loss_type='dapo', importance_sampling_level='token', epsilon=0.2, epsilon_high=0.28, beta, use_bias_correction_kl=False."
    trainer = make_trainer(tiny, loss_type='dapo', importance_sampling_level='token', epsilon=0.2, epsilon_high=0.28, beta=beta, use_bias_correction_kl=False)
    s = check(trainer, DAPO(eps_low=0.2, eps_high=0.28), RKL(beta) if beta else NoKL(), seed=1)
    assert s['clip_low_frac'] > 0 and s['clip_high_frac'] > 0

@pytest.mark.parametrize('beta', [0.0, 0.04])
def test_gspo_matches_trl_sequence_level(tiny, beta):
    "GSPO(3e-4, 4e-4) + RKL(beta) == TRL loss_type='grpo', importance_sampling_level='sequence', epsilon=3e-4, epsilon_high=4e-4, beta, use_bias_correction_kl=False."
    trainer = make_trainer(tiny, loss_type='grpo', importance_sampling_level='sequence', epsilon=3e-4, epsilon_high=4e-4, beta=beta, use_bias_correction_kl=False)
    s = check(trainer, GSPO(eps_low=3e-4, eps_high=4e-4), RKL(beta) if beta else NoKL(), seed=2, eps_scale=1e-3)
    assert 0 < s['clip_frac'] < 1                                  # some sequences clipped, some not

def test_rkl_matches_trl_k3_without_bias_correction(tiny):
    "RKL(0.04)'s per-token penalty == TRL's per_token_kl (k3) times beta, use_bias_correction_kl=False, loss_type='grpo', on policy."
    trainer = make_trainer(tiny, loss_type='grpo', epsilon=0.2, beta=0.04, use_bias_correction_kl=False)
    logp, _, ref_logp, adv, mask = fixed_tensors(3)
    zero_adv = torch.zeros(N)                                      # isolates the KL term: loss = seq-mean of beta * k3
    l_trl, g_trl, m_trl = trl_loss(trainer, logp, logp, ref_logp, zero_adv, mask)
    l_us, g_us, s_us = ours(GRPO(), RKL(0.04), logp, logp, ref_logp, zero_adv, mask)
    torch.testing.assert_close(l_us, l_trl); torch.testing.assert_close(g_us, g_trl)
    assert s_us['penalty'] == pytest.approx(0.04 * m_trl['kl'], rel=1e-5) and l_us > 0

def test_trl_bias_correction_differs_off_policy(tiny):
    "Guard on the option we name: TRL's default use_bias_correction_kl=True multiplies k3 by the ratio, which we do not."
    trainer = make_trainer(tiny, loss_type='grpo', epsilon=0.2, beta=0.04, use_bias_correction_kl=True)
    t = fixed_tensors(4)
    l_trl, _, _ = trl_loss(trainer, *t)
    l_us, _, _ = ours(GRPO(), RKL(0.04), *t)
    assert abs(l_us - l_trl) > 1e-4

@pytest.mark.parametrize('scale_rewards,scale', [('group', True), ('none', False)])
def test_advantages_match_trl_group_scaling(tiny, scale_rewards, scale):
    "group_advantages(scale) == TRL's advantages with scale_rewards='group' (Bessel std + 1e-4) or 'none' (mean only)."
    rewards = [1.0, 0.0, 0.5, 2.0, -1.0, 2.0]                     # two groups of G = 3, groups contiguous
    trainer = make_trainer(tiny, reward=lambda completions, **kw: rewards[:len(completions)], scale_rewards=scale_rewards)
    inputs = [{'prompt': p} for p in ['ab', 'cd'] for _ in range(G)]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        out = trainer._generate_and_score_completions(inputs)
    want = group_advantages(torch.tensor(rewards), G, scale=scale)
    torch.testing.assert_close(out['advantages'].float(), want, atol=1e-6, rtol=1e-6)
