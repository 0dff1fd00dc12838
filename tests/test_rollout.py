"Tests of carerft.rollout (sampler, masks, log-probs) and carerft.tiny (tiny models and tokenizers)."
import math, tempfile, warnings
import pytest
import torch
import torch.nn.functional as F
from transformers import (AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM, GPT2Config,
                          GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM)
from carerft.tiny import char_tokenizer, tiny_model
from carerft.rollout import (Rollout, sample, sample_ids, token_logprobs, completion_masks, encode_prompts,
                             special_ids, positions)

PROMPTS = ['a+b=', 'b=', 'ab ab+a=', 'a']   # different lengths: left padding of 0, 2, 4 and 7 tokens


@pytest.fixture(scope='module')
def tok(): return char_tokenizer('ab+= ')   # 4 specials + 5 chars: EOS is likely, many rows end early


@pytest.fixture(scope='module')
def model(tok): return tiny_model(tok)


def ref_logprobs64(model, r, temperature):
    "Independent reference: each row alone (no padding, no mask, default positions), full logits, float64 log_softmax."
    logp, ent = torch.zeros(r.logp.shape, dtype=torch.float64), torch.zeros(r.logp.shape, dtype=torch.float64)
    for i in range(len(r)):
        p, n = r.prompt_ids[i][r.prompt_mask[i] > 0], int(r.lengths[i])
        with torch.no_grad(): logits = model(input_ids=(x := torch.cat([p, r.completion_ids[i, :n]])[None]), attention_mask=torch.ones_like(x)).logits[0].double()
        lp = (logits[len(p) - 1:len(p) + n - 1] / temperature).log_softmax(-1)          # (n, V)
        logp[i, :n] = lp.gather(-1, r.completion_ids[i, :n, None]).squeeze(-1)
        ent[i, :n] = -(lp.exp() * lp).sum(-1)
    return logp, ent


# ---------------------------------------------------------------- tiny
def test_tiny_roundtrip(tok, model):
    with tempfile.TemporaryDirectory() as d:
        tok.save_pretrained(d); model.save_pretrained(d)
        # not AutoTokenizer: with the qwen2 config.json beside it, transformers 5 rebuilds a Qwen2Tokenizer that drops spaces
        tok2, model2 = PreTrainedTokenizerFast.from_pretrained(d), AutoModelForCausalLM.from_pretrained(d)
    assert tok2.get_vocab() == tok.get_vocab() and tok2.padding_side == 'left'
    assert (tok2.pad_token_id, tok2.eos_token_id, tok2.bos_token_id) == (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id)
    enc = tok(PROMPTS, padding=True, return_tensors='pt')
    assert torch.equal(tok2(PROMPTS, padding=True, return_tensors='pt')['input_ids'], enc['input_ids'])
    assert tok2.batch_decode(enc['input_ids'], skip_special_tokens=True) == PROMPTS
    torch.testing.assert_close(model2(**enc).logits, model(**enc).logits)
    assert model2.config.tie_word_embeddings and model2.lm_head.weight is model2.model.embed_tokens.weight


def test_tiny_seed_and_shapes(tok):
    a, b = tiny_model(tok, hidden=32, layers=3, heads=4, kv_heads=2, seed=3), tiny_model(tok, hidden=32, layers=3, heads=4, kv_heads=2, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert a.config.num_key_value_heads == 2 and len(a.model.layers) == 3 and a.config.vocab_size == len(tok)


# ---------------------------------------------------------------- recompute == sampled
@pytest.mark.parametrize('temperature,top_k,top_p,G', [(1.0, None, None, 4), (0.7, None, None, 3), (1.5, 6, None, 3),
                                                        (1.0, None, 0.8, 5), (1.0, None, None, 1)])
def test_recompute_matches_sampled(tok, model, temperature, top_k, top_p, G):
    r = sample(model, tok, PROMPTS, G, 16, temperature=temperature, top_k=top_k, top_p=top_p,
               generator=torch.Generator().manual_seed(1))
    assert r.truncated.any() and not r.truncated.all()            # EOS early in some rows, not in others
    assert len(set(r.lengths.tolist())) > 2
    re = token_logprobs(model, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask, temperature)
    torch.testing.assert_close(re, r.logp, atol=1e-5, rtol=0)
    ref, _ = ref_logprobs64(model, r, temperature)
    torch.testing.assert_close(r.logp.double(), ref, atol=1e-5, rtol=0)


def other_model(kind, tok):
    torch.manual_seed(0)
    if kind == 'gpt2':   # absolute position embeddings: wrong position ids for left padding would show here (RoPE hides a shift)
        return GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).eval()
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, eos_token_id=tok.eos_token_id,
                                        pad_token_id=tok.pad_token_id)).eval()


@pytest.mark.parametrize('kind', ['gpt2', 'llama'])
def test_other_architectures(tok, kind):
    m = other_model(kind, tok)
    r = sample(m, tok, PROMPTS, 3, 12, generator=torch.Generator().manual_seed(0))
    assert r.truncated.any() and not r.truncated.all()
    ref, _ = ref_logprobs64(m, r, 1.0)
    torch.testing.assert_close(r.logp.double(), ref, atol=1e-5, rtol=0)
    test_greedy_matches_generate(tok, m)


@pytest.mark.parametrize('attn', ['eager', 'sdpa'])
def test_recompute_gqa_and_attention_impls(tok, attn):
    m = tiny_model(tok, hidden=32, heads=4, kv_heads=2, layers=3, attn_implementation=attn, seed=2)
    r = sample(m, tok, PROMPTS, 3, 10, generator=torch.Generator().manual_seed(0))
    re = token_logprobs(m, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)
    torch.testing.assert_close(re, r.logp, atol=1e-5, rtol=0)


def test_token_logprobs_entropy_and_grad(tok, model):
    r = sample(model, tok, PROMPTS, 2, 8, temperature=0.8, generator=torch.Generator().manual_seed(2))
    logp, ent = token_logprobs(model, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask, 0.8, return_entropy=True)
    ref_lp, ref_ent = ref_logprobs64(model, r, 0.8)
    torch.testing.assert_close(logp.double(), ref_lp, atol=1e-5, rtol=0)
    torch.testing.assert_close(ent.double(), ref_ent, atol=1e-5, rtol=0)
    # gradients flow from rollout tensors (made under inference_mode inside the sampler)
    model.zero_grad()
    (token_logprobs(model, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask.bool(), 0.8).sum()).backward()
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0
    model.zero_grad()
    with torch.no_grad():
        assert not token_logprobs(model, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask).requires_grad


def test_sampling_distribution(tok, model):
    "First-token frequencies over 20,000 samples match softmax(logits / tau) of a plain forward."
    tau, n = 0.8, 20_000
    r = sample(model, tok, ['ab+'], n, 1, temperature=tau, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): p = (model(**tok(['ab+'], return_tensors='pt')).logits[0, -1] / tau).softmax(-1)
    freq = torch.bincount(r.completion_ids[:, 0], minlength=len(tok)) / n
    assert (freq - p).abs().max() < 4 * math.sqrt(0.25 / n)
    torch.testing.assert_close(r.logp[:, 0], p.log()[r.completion_ids[:, 0]], atol=1e-5, rtol=0)


def test_greedy_matches_generate(tok, model):
    "top_k=1 is greedy decoding: same tokens as transformers' generate on left-padded prompts of different lengths."
    r = sample(model, tok, PROMPTS, 1, 12, top_k=1)
    enc = tok(PROMPTS, padding=True, return_tensors='pt')
    out = model.generate(**enc, do_sample=False, max_new_tokens=12, pad_token_id=tok.pad_token_id)[:, enc['input_ids'].shape[1]:]
    T = r.completion_ids.shape[1]
    assert torch.equal(r.completion_ids, out[:, :T]) and (out[:, T:] == tok.pad_token_id).all()


# ---------------------------------------------------------------- masks on a hand-built model
def markov_model(tok, chain, big=30.0, hidden=32):
    "A real Qwen2 whose next token is a fixed function of the current one: attention and MLP outputs zeroed, one-hot embeddings."
    V = len(tok)
    cfg = Qwen2Config(vocab_size=V, hidden_size=hidden, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, tie_word_embeddings=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    m = Qwen2ForCausalLM(cfg).eval()
    ids = tok.convert_tokens_to_ids
    with torch.no_grad():
        for layer in m.model.layers: layer.self_attn.o_proj.weight.zero_(); layer.mlp.down_proj.weight.zero_()
        m.model.embed_tokens.weight.zero_(); m.model.embed_tokens.weight[:, :V] = torch.eye(V)
        m.lm_head.weight.zero_()
        for a, b in zip(chain, chain[1:]): m.lm_head.weight[ids(b), ids(a)] = big
    return m


@pytest.fixture(scope='module')
def chain_tok(): return char_tokenizer('abcdefgh')


@pytest.fixture(scope='module')
def chain_model(chain_tok): return markov_model(chain_tok, list('abcdefgh') + ['<eos>'])


def test_masks_exact(chain_tok, chain_model):
    r = sample(chain_model, chain_tok, ['a', 'hgf', 'ch'], 2, 6, generator=torch.Generator().manual_seed(0))
    t = chain_tok.convert_tokens_to_ids
    eos, pad = chain_tok.eos_token_id, chain_tok.pad_token_id
    expect = {'a': [t(c) for c in 'bcdefg'], 'hgf': [t('g'), t('h'), eos, pad, pad, pad], 'ch': [eos] + [pad] * 5}
    assert r.completion_ids.tolist() == [expect[p] for p in r.prompts]
    assert r.completion_mask.tolist() == [[1.0] * 6] * 2 + [[1.0] * 3 + [0.0] * 3] * 2 + [[1.0] + [0.0] * 5] * 2
    assert r.lengths.tolist() == [6, 6, 3, 3, 1, 1] and r.truncated.tolist() == [True, True, False, False, False, False]
    assert r.completions == ['bcdefg'] * 2 + ['gh'] * 2 + [''] * 2
    assert r.prompts == ['a', 'a', 'hgf', 'hgf', 'ch', 'ch'] and r.group_size == 2 and len(r) == 6
    assert r.completion_mask.dtype == torch.float32 and r.logp.dtype == torch.float32 and r.truncated.dtype == torch.bool
    assert r.logp.abs().max() < 1e-6                                   # deterministic chain: log 1 = 0


def test_early_stop_and_exact_budget(chain_tok, chain_model):
    r = sample(chain_model, chain_tok, ['b', 'e'], 1, 20)          # all rows end: loop stops at the longest completion
    assert r.completion_ids.shape == (2, 7) and r.lengths.tolist() == [7, 4] and not r.truncated.any()
    r = sample(chain_model, chain_tok, ['b'], 1, 7)                # EOS exactly at the last allowed step: not truncated
    assert r.lengths.tolist() == [7] and not r.truncated.any()
    r = sample(chain_model, chain_tok, ['b'], 1, 6)
    assert r.lengths.tolist() == [6] and r.truncated.all()


def test_generation_config_eos_ids(chain_tok):
    m = markov_model(chain_tok, list('abcdefgh') + ['<eos>'])
    m.generation_config.eos_token_id = [chain_tok.eos_token_id, chain_tok.convert_tokens_to_ids('e')]
    r = sample(m, chain_tok, ['a', 'f'], 1, 10)
    assert r.completions == ['bcde', 'gh'] and r.lengths.tolist() == [4, 3] and not r.truncated.any()


def test_suppress_eos(tok, model):
    r = sample(model, tok, PROMPTS, 3, 20, suppress_eos=True, generator=torch.Generator().manual_seed(0))
    assert not (r.completion_ids == tok.eos_token_id).any() and r.truncated.all()
    assert r.lengths.tolist() == [20] * 12 and r.completion_mask.all()


# ---------------------------------------------------------------- reproducibility, padding fallback, errors
def test_reproducible(tok, model):
    a = sample(model, tok, PROMPTS, 3, 10, generator=torch.Generator().manual_seed(5))
    b = sample(model, tok, PROMPTS, 3, 10, generator=torch.Generator().manual_seed(5))
    c = sample(model, tok, PROMPTS, 3, 10, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.logp, b.logp) and a.completions == b.completions
    assert a.completions != c.completions
    torch.manual_seed(0); d = sample(model, tok, PROMPTS, 3, 10)
    torch.manual_seed(0); e = sample(model, tok, PROMPTS, 3, 10)
    assert torch.equal(d.completion_ids, e.completion_ids)


def test_pad_falls_back_to_eos():
    t = char_tokenizer('ab+= ', pad_token=None)
    m = tiny_model(t)
    with pytest.warns(UserWarning, match='no pad token'):
        r = sample(m, t, PROMPTS, 3, 12, generator=torch.Generator().manual_seed(0))
    eos = t.eos_token_id
    assert (r.prompt_ids[r.prompt_mask == 0] == eos).all() and (r.completion_ids[r.completion_mask == 0] == eos).all()
    assert not r.truncated.all()
    re = token_logprobs(m, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)
    torch.testing.assert_close(re, r.logp, atol=1e-5, rtol=0)


def test_ref_model(tok, model):
    ref = tiny_model(tok, seed=7)
    r = sample(model, tok, PROMPTS, 2, 8, generator=torch.Generator().manual_seed(0), ref_model=ref)
    expect, _ = ref_logprobs64(ref, r, 1.0)
    torch.testing.assert_close(r.ref_logp.double(), expect, atol=1e-5, rtol=0)
    assert sample(model, tok, PROMPTS, 2, 8).ref_logp is None


@pytest.mark.parametrize('kwargs,match', [
    (dict(group_size=0), 'group_size'), (dict(group_size=2.0), 'group_size'), (dict(group_size=True), 'group_size'),
    (dict(max_new_tokens=0), 'max_new_tokens'), (dict(temperature=0.0), 'temperature'), (dict(temperature=-1.0), 'temperature'),
    (dict(temperature=float('nan')), 'temperature'), (dict(temperature=float('inf')), 'temperature'),
    (dict(top_k=0), 'top_k'), (dict(top_p=0.0), 'top_p'), (dict(top_p=1.5), 'top_p'),
    (dict(max_prompt_len=3), 'max_prompt_len=3'), (dict(max_prompt_len=0), 'max_prompt_len'),
    (dict(prompts='ab'), 'prompts'), (dict(prompts=[]), 'prompts'), (dict(prompts=['a', 3]), 'prompts'),
    (dict(prompts=['a', '']), r'prompts\[1\]'),
])
def test_bad_arguments(tok, model, kwargs, match):
    args = dict(prompts=['ab', 'a+b='], group_size=2, max_new_tokens=4) | kwargs
    with pytest.raises(ValueError, match=match): sample(model, tok, **args)


def test_prompt_limit_is_inclusive(tok, model):
    assert sample(model, tok, ['a+b='], 1, 2, max_prompt_len=4).prompt_ids.shape == (1, 4)
    with pytest.raises(ValueError, match=r'prompts\[0\] has 4 tokens.*max_prompt_len=3'): sample(model, tok, ['a+b='], 1, 2, max_prompt_len=3)


def test_no_eos_anywhere(model):
    t = char_tokenizer('ab', eos_token=None)
    m = tiny_model(t); m.generation_config.eos_token_id = None
    with pytest.raises(ValueError, match='eos'): sample(m, t, ['ab'], 1, 2)


def test_token_logprobs_bad_input(tok, model):
    ids, mask = torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match='temperature'): token_logprobs(model, ids, mask, ids, mask, temperature=0)
    with pytest.raises(ValueError, match='shapes'): token_logprobs(model, ids, mask, ids[:, :2], mask)
    with pytest.raises(ValueError, match='prompt_mask'): sample_ids(model, ids, torch.zeros_like(mask), 1, 2, 1, 0)


def test_completion_masks_edge_cases():
    eos = torch.tensor([1])
    mask, trunc = completion_masks(torch.tensor([[1, 1, 1], [2, 2, 2], [2, 1, 2]]), eos)
    assert mask.tolist() == [[True, False, False], [True, True, True], [True, True, False]]
    assert trunc.tolist() == [False, True, False]


# ---------------------------------------------------------------- group_size: each prompt run once
from carerft.rollout import _inner


def model_calls(model):
    "Record the (rows, tokens) of every call to the decoder under `model`: shows which scoring path ran."
    calls = []
    h = _inner(model).base_model.register_forward_pre_hook(lambda mod, a, kw: calls.append(tuple(kw.get('input_ids', a[0] if a else None).shape)), with_kwargs=True)
    return calls, h


def shared_vs_plain(m, r, temperature, return_entropy, G):
    "log-probs (and entropies) and parameter gradients from the plain path and from group_size=G."
    args = (r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask, temperature, return_entropy)
    w = torch.randn(r.completion_ids.shape, generator=torch.Generator().manual_seed(0))   # a loss touching every token
    ps = [p for p in m.parameters() if p.requires_grad]
    res = []
    for g in (1, G):
        calls, h = model_calls(m)
        out = token_logprobs(m, *args, group_size=g); h.remove()
        out = out if return_entropy else (out,)
        grads = torch.autograd.grad(sum((o * w).sum() for o in out), ps)
        res.append((out, grads, calls))
    return res


def assert_shared_equal(res, N, P, T, G):
    (a, ga, ca), (b, gb, cb) = res
    assert ca == [(N, P + T)] and cb == ([(N // G, P), (N, T - 1)] if T > 1 else [(N // G, P)])   # the prefix path really ran
    for x, y in zip(a, b): torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
    for x, y in zip(ga, gb): torch.testing.assert_close(y, x, atol=1e-5, rtol=1e-5)
    assert max(x.abs().max() for x in ga) > 0


@pytest.mark.parametrize('kind,temperature,return_entropy', [('qwen2', 1.0, False), ('qwen2', 0.7, True),
                                                             ('gqa', 1.3, True), ('gqa', 1.0, False),
                                                             ('gpt2', 0.8, True), ('llama', 1.0, True)])
def test_shared_prefix_matches_plain(tok, kind, temperature, return_entropy):
    m = {'qwen2': lambda: tiny_model(tok, hidden=32, seed=4), 'gqa': lambda: tiny_model(tok, hidden=32, heads=4, kv_heads=2, layers=3, seed=5),
         'gpt2': lambda: other_model('gpt2', tok), 'llama': lambda: other_model('llama', tok)}[kind]().train()
    for mod in m.modules():
        if isinstance(mod, torch.nn.Dropout): mod.p = 0.0   # GPT-2's dropout: train mode without the noise
    G = 4
    r = sample(m, tok, PROMPTS, G, 12, temperature=temperature, generator=torch.Generator().manual_seed(3))
    assert r.truncated.any() and not r.truncated.all() and (r.prompt_mask == 0).any()   # early EOS in some rows, left padding
    assert_shared_equal(shared_vs_plain(m, r, temperature, return_entropy, G), len(r), r.prompt_ids.shape[1], r.completion_ids.shape[1], G)


def test_shared_prefix_sub_groups_and_one_token(tok):
    "group_size may be any divisor of the copies (e.g. micro-batches holding half a group); T = 1 needs no completion pass."
    m = tiny_model(tok, hidden=32, heads=4, kv_heads=2, seed=6).train()
    r = sample(m, tok, PROMPTS, 6, 9, generator=torch.Generator().manual_seed(0))
    N, P, T = len(r), r.prompt_ids.shape[1], r.completion_ids.shape[1]
    assert_shared_equal(shared_vs_plain(m, r, 1.0, True, 3), N, P, T, 3)
    r1 = sample(m, tok, PROMPTS, 3, 1, generator=torch.Generator().manual_seed(0))
    assert_shared_equal(shared_vs_plain(m, r1, 0.9, True, 3), len(r1), r1.prompt_ids.shape[1], 1, 3)


def test_shared_prefix_peft(tok):
    peft = pytest.importorskip('peft')
    m = peft.get_peft_model(tiny_model(tok, hidden=32, seed=7), peft.LoraConfig(r=4, target_modules=['q_proj', 'v_proj'], lora_dropout=0.0))
    with torch.no_grad():
        for n, p in m.named_parameters():
            if 'lora_B' in n: p.normal_(0, 0.1)   # a live adapter, so its gradients are not trivially shared
    r = sample(_inner(m), tok, PROMPTS, 3, 10, generator=torch.Generator().manual_seed(0))
    assert_shared_equal(shared_vs_plain(m.train(), r, 1.0, False, 3), len(r), r.prompt_ids.shape[1], r.completion_ids.shape[1], 3)


class NoCacheLM(torch.nn.Module):
    "A causal LM whose forward takes no KV cache."
    def __init__(self, m): super().__init__(); self.m = m
    def forward(self, input_ids, attention_mask, position_ids, use_cache=False):
        return self.m(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)


class IgnoresCacheLM(NoCacheLM):
    "Takes a cache argument but never returns one."
    def forward(self, input_ids, attention_mask, position_ids, use_cache=False, past_key_values=None):
        return super().forward(input_ids, attention_mask, position_ids)


def test_shared_prefix_falls_back(tok):
    "No cache in the forward's signature, or gradient checkpointing in training: the plain path, same numbers."
    m = tiny_model(tok, hidden=32, seed=8)
    r = sample(m, tok, PROMPTS, 3, 8, generator=torch.Generator().manual_seed(0))
    args = (r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)
    expect = token_logprobs(m, *args)
    for wrapped in (NoCacheLM(m), IgnoresCacheLM(m)):
        torch.testing.assert_close(token_logprobs(wrapped, *args, group_size=3), expect, atol=1e-6, rtol=0)
    m.gradient_checkpointing_enable(); m.train()
    calls, h = model_calls(m)
    with warnings.catch_warnings():
        warnings.simplefilter('error')                 # no "caching is incompatible with gradient checkpointing" warning
        out = token_logprobs(m, *args, group_size=3)
    h.remove()
    assert calls == [(len(r), r.prompt_ids.shape[1] + r.completion_ids.shape[1])]
    torch.testing.assert_close(out, expect, atol=1e-5, rtol=0)
    out.sum().backward()
    assert m.model.embed_tokens.weight.grad.abs().sum() > 0


def test_shared_prefix_bad_groups(tok, model):
    r = sample(model, tok, PROMPTS, 2, 4, generator=torch.Generator().manual_seed(0))
    args = (r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)
    for g in (0, -2, 2.0, True, None):
        with pytest.raises(ValueError, match='group_size'): token_logprobs(model, *args, group_size=g)
    with pytest.raises(ValueError, match=r'group_size=3 does not divide the 8 rows'): token_logprobs(model, *args, group_size=3)
    with pytest.raises(ValueError, match=r'group_size=4: rows 0\.\.3 do not share one prompt'): token_logprobs(model, *args, group_size=4)
    perm = torch.tensor([0, 1, 2, 3, 4, 6, 5, 7])      # the third group mixes prompts 2 and 3
    with pytest.raises(ValueError, match=r'group_size=2: rows 4\.\.5'):
        token_logprobs(model, *(a[perm] for a in args), group_size=2)
    ids, mask = r.prompt_ids.clone(), r.prompt_mask.clone()
    mask[1, 0] = 1 - mask[1, 0]                         # same ids, different mask
    with pytest.raises(ValueError, match=r'rows 0\.\.1'): token_logprobs(model, ids, mask, *args[2:], group_size=2)


# ---------------------------------------------------------------- the chunked LM head (chunk_size) against the full logits
from carerft.rollout import chunked_logprobs, _lm_head, _logp_entropy


def rel_err(a, b):
    "Largest difference relative to the largest entry: float32 round-off from a regrouped matmul is ~1e-7 of it."
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-30)).item()


def with_grads(m, args, ps, **kw):
    "log-probs, entropies, and the gradients of a loss using both with respect to `ps`."
    out = token_logprobs(m, *args, return_entropy=True, **kw)
    w = torch.randn(2, *out[0].shape, generator=torch.Generator().manual_seed(0))
    return out + torch.autograd.grad(sum((o * wi).sum() for o, wi in zip(out, w)), ps)


def assert_chunked_equal(m, r, temperature, G, sizes, rel=1e-6, rel_grad=2e-6):
    "Values and entropies within `rel` of the full logits' (relative to the largest entry), gradients within `rel_grad`."
    args = (r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask, temperature)
    ps = [p for p in m.parameters() if p.requires_grad]
    expect = with_grads(m, args, ps, group_size=G, chunk_size=None)
    assert all(x.abs().max() > 0 for x in expect)      # every output and every gradient is live
    for cs in sizes:
        got = with_grads(m, args, ps, group_size=G, chunk_size=cs)
        errs = [rel_err(a, b) for a, b in zip(got, expect)]
        assert max(errs[:2]) < rel and max(errs[2:]) < rel_grad, (cs, errs)
        for x in got[:2]: assert (x[r.completion_mask == 0] == 0).all()   # masked exactly as before


@pytest.mark.parametrize('G,temperature', [(1, 1.0), (1, 0.7), (4, 1.3), (2, 0.9)])
def test_chunked_matches_full_logits(tok, G, temperature):
    "Values, entropies and every parameter's gradient, G = 1 (plain pass) and G > 1 (shared prefix; 2 = sub-groups)."
    m = tiny_model(tok, hidden=32, heads=4, kv_heads=2, layers=2, seed=11).train()
    r = sample(m, tok, PROMPTS, 4, 12, temperature=temperature, generator=torch.Generator().manual_seed(4))
    NT = r.completion_ids.numel()
    assert r.truncated.any() and not r.truncated.all() and (r.prompt_mask == 0).any() and NT % 7 and NT > 64
    assert_chunked_equal(m, r, temperature, G, [1, 7, 64, NT, NT + 5, 1024])   # 7 does not divide N*T; NT + 5 > N*T


def test_chunked_single_chunk_is_bit_exact():
    "One chunk runs the same matmul on the same rows as the full path (Linear flattens the leading dims): bit-identical."
    g = torch.Generator().manual_seed(0)
    head, hidden = torch.nn.Linear(16, 40, bias=False), torch.randn(3, 5, 16, generator=g, requires_grad=True)
    ids = torch.randint(0, 40, (3, 5), generator=g)
    def grads(out): return torch.autograd.grad(out[0].sum() + 0.3 * out[1].sum(), (hidden, head.weight))
    full = _logp_entropy(head(hidden), ids, 0.8, True)
    expect = full + grads(full)
    for cs in (15, 16, 1000):
        out = chunked_logprobs(head, hidden, ids, 0.8, entropy=True, chunk_size=cs)
        assert all(torch.equal(a, b) for a, b in zip(out + grads(out), expect))


def test_chunked_wrong_stitching_is_caught():
    "Guard: the comparison above catches a chunk stitched in the wrong place (positions flattened time-major, or chunks swapped)."
    g = torch.Generator().manual_seed(1)
    head, hidden = torch.nn.Linear(16, 40, bias=False), torch.randn(3, 5, 16, generator=g)
    ids = torch.randint(0, 40, (3, 5), generator=g)
    full = _logp_entropy(head(hidden), ids, 1.0, False)[0]
    time_major = chunked_logprobs(head, hidden.transpose(0, 1).reshape(3, 5, 16), ids, chunk_size=4)[0]
    out = chunked_logprobs(head, hidden, ids, chunk_size=4)[0].flatten()
    swapped = torch.cat([out[4:8], out[:4], out[8:]]).view(3, 5)
    assert rel_err(out.view(3, 5), full) < 1e-6
    assert rel_err(time_major, full) > 1e-2 and rel_err(swapped, full) > 1e-2


def test_chunked_is_the_default(tok, model):
    "token_logprobs without chunk_size runs the LM head only on chunks (never inside the model's forward), and the hooks go."
    r = sample(model, tok, PROMPTS, 2, 8, generator=torch.Generator().manual_seed(0))
    args = (r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)
    shapes = []
    (N, T), V = r.completion_ids.shape, len(tok)
    in_model = {1: [(N, 0, V)], 2: [(N // 2, 0, V), (N, 0, V)]}      # plain pass; prompts once, then the completions
    h = model.lm_head.register_forward_hook(lambda mod, a, out: shapes.append(tuple(out.shape)))
    try:
        for G in (1, 2):
            shapes.clear()
            token_logprobs(model, *args, group_size=G)
            assert shapes == in_model[G] + [(N * T, V)], shapes             # empty inside the model, one chunk after
            shapes.clear()
            token_logprobs(model, *args, group_size=G, chunk_size=None)
            assert shapes[0][-2] > 0 and all(len(s) == 3 for s in shapes)   # the old path: logits inside the model
    finally:
        h.remove()
    assert not model.lm_head._forward_hooks and not model.lm_head._forward_pre_hooks


def test_chunked_hooks_removed_on_error(tok, model):
    ids, mask = torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(Exception):
        token_logprobs(model, ids, mask, ids + 100, mask)     # token ids beyond the vocabulary: the forward raises
    assert not model.lm_head._forward_hooks and not model.lm_head._forward_pre_hooks


def test_chunked_peft_lora_on_the_head(tok):
    "A LoRA adapter on lm_head (and q_proj): the chunks run the adapted head; adapter off (the LoRA reference) too."
    peft = pytest.importorskip('peft')
    base = tiny_model(tok, hidden=32, seed=12)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')              # peft's note on adapting a tied lm_head
        m = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=['q_proj', 'lm_head'], lora_dropout=0.0))
    with torch.no_grad():
        for n, p in m.named_parameters():
            if 'lora_B' in n: p.normal_(0, 0.1)
    assert type(_lm_head(m)).__module__.startswith('peft')     # the head the chunks call is the adapted one
    r = sample(_inner(m), tok, PROMPTS, 3, 10, generator=torch.Generator().manual_seed(0))
    assert_chunked_equal(m.train(), r, 0.8, 1, [5, 1000])
    assert_chunked_equal(m, r, 0.8, 3, [5])
    args = (r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)
    with torch.no_grad():
        on = token_logprobs(m, *args, chunk_size=5)
        with m.disable_adapter():
            off, off_full = token_logprobs(m, *args, chunk_size=5), token_logprobs(m, *args, chunk_size=None)
    assert rel_err(off, off_full) < 1e-6 and rel_err(off, on) > 1e-3


def test_chunked_follows_the_models_autocast(tok):
    """accelerate's mixed precision wraps the model's forward in autocast, not the caller: the chunks run under the
    autocast the head had inside the model, so the head computes in bf16 in both paths."""
    m = tiny_model(tok, hidden=32, seed=13)
    r = sample(m, tok, PROMPTS, 2, 8, generator=torch.Generator().manual_seed(0))
    args = (r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)
    with torch.no_grad():
        fp32 = token_logprobs(m, *args)
        m.forward = torch.autocast('cpu', dtype=torch.bfloat16)(m.forward)    # what accelerate does
        full, chunked = token_logprobs(m, *args, chunk_size=None), token_logprobs(m, *args, chunk_size=1000)
    assert rel_err(full, fp32) > 1e-4                       # guard: bf16 really changes the numbers
    assert rel_err(chunked, full) < 1e-6


class FunctionalHeadLM(torch.nn.Module):
    "Logits from the head's weight without calling the head module: the chunked path must notice and use the logits."
    def __init__(self, m): super().__init__(); self.m = m
    def get_output_embeddings(self): return self.m.lm_head
    def forward(self, input_ids, attention_mask, position_ids, use_cache=False, logits_to_keep=0):
        h = self.m.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
        return type('Out', (), dict(logits=h[:, -logits_to_keep:] @ self.m.lm_head.weight.T))


class Wrapper(torch.nn.Module):
    "A wrapper with `.module` that is not DDP (as FSDP and DeepSpeed engines are)."
    def __init__(self, m): super().__init__(); self.module = m
    def forward(self, **kw): return self.module(**kw)


def test_chunked_falls_back_to_full_logits(tok):
    "Soft-capped logits (Gemma 2), a head that is never called, a sharding wrapper: full logits, same numbers, no error."
    from transformers import Gemma2Config, Gemma2ForCausalLM
    torch.manual_seed(0)
    gemma = Gemma2ForCausalLM(Gemma2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=4, num_key_value_heads=2, head_dim=8, final_logit_softcapping=2.0,
                                           pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)).eval()
    qwen = tiny_model(tok, hidden=32, seed=14)
    assert _lm_head(gemma) is None and _lm_head(Wrapper(qwen)) is None and _lm_head(qwen) is qwen.lm_head
    for m in (gemma, FunctionalHeadLM(qwen), Wrapper(qwen)):
        inner = getattr(m, 'module', m)
        r = sample(gemma if m is gemma else qwen, tok, PROMPTS, 2, 8, generator=torch.Generator().manual_seed(0))
        args = (r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask, 0.9, True)
        for a, b in zip(token_logprobs(m, *args), token_logprobs(m, *args, chunk_size=None)):
            assert torch.equal(a, b)
        ref, _ = ref_logprobs64(gemma if m is gemma else qwen, r, 0.9)
        torch.testing.assert_close(token_logprobs(m, *args)[0].double(), ref, atol=1e-5, rtol=0)


def test_chunked_under_ddp(tok, tmp_path):
    "Through a (one-process, gloo) DistributedDataParallel wrapper the chunked path runs and equals the full logits."
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg', rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(tiny_model(tok, hidden=32, seed=15).train())
        assert _lm_head(ddp) is ddp.module.lm_head
        r = sample(ddp.module, tok, PROMPTS, 3, 8, generator=torch.Generator().manual_seed(0))
        assert_chunked_equal(ddp, r, 0.9, 3, [5])
        assert_chunked_equal(ddp, r, 0.9, 1, [5])
    finally:
        dist.destroy_process_group()


def test_chunk_size_bad_values(tok, model):
    ids, mask = torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long)
    for cs in (0, -1, 2.0, True, '8'):
        with pytest.raises(ValueError, match='chunk_size must be None or an int >= 1'): token_logprobs(model, ids, mask, ids, mask, chunk_size=cs)


# ---------------------------------------------------------------- token budget (max_batch_tokens)
def count_prefills(model):
    "A list that gets one entry per forward without a KV cache (a prefill), and the hook handle."
    calls = []
    def hook(module, args, kwargs):
        if kwargs.get('cache', kwargs.get('past_key_values')) is None: calls.append(kwargs['input_ids'].shape)
    return calls, model.register_forward_pre_hook(hook, with_kwargs=True)


FIELDS = ('prompt_ids', 'prompt_mask', 'completion_ids', 'completion_mask', 'logp', 'truncated', 'lengths')


@pytest.mark.parametrize('G,T,kw', [(3, 10, {}), (4, 16, dict(top_p=0.8)), (1, 5, dict(top_k=3)), (2, 7, dict(suppress_eos=True))])
def test_budget_holding_everything_is_bit_identical(tok, model, G, T, kw):
    a = sample(model, tok, PROMPTS, G, T, 0.9, generator=torch.Generator().manual_seed(2), **kw)
    P = a.prompt_ids.shape[1]
    for budget in (len(PROMPTS) * G * (P + T), 10**9):   # exactly the whole batch, and far more
        b = sample(model, tok, PROMPTS, G, T, 0.9, generator=torch.Generator().manual_seed(2), max_batch_tokens=budget, **kw)
        for f in FIELDS:
            x, y = getattr(a, f), getattr(b, f)
            assert x.dtype == y.dtype and torch.equal(x, y), f
        assert a.completions == b.completions and a.prompts == b.prompts


@pytest.mark.parametrize('groups_per_part', [1, 2, 3])
def test_budget_splits_into_valid_rollouts(tok, model, groups_per_part):
    G, T = 3, 14
    P = max(len(p) for p in PROMPTS)   # one character, one token
    budget = groups_per_part * G * (P + T)
    calls, h = count_prefills(model)
    try:
        runs = [sample(model, tok, PROMPTS, G, T, 0.8, generator=torch.Generator().manual_seed(4), max_batch_tokens=budget)
                for _ in range(2)]
    finally:
        h.remove()
    assert len(calls) == 2 * math.ceil(len(PROMPTS) / groups_per_part)          # sub-batches really happened
    r, r2 = runs
    for f in FIELDS: assert torch.equal(getattr(r, f), getattr(r2, f)), f          # reproducible
    assert r.completion_ids.shape[0] == len(PROMPTS) * G and r.prompts == [p for p in PROMPTS for _ in range(G)]
    eos = torch.tensor([tok.eos_token_id])
    mask, truncated = completion_masks(r.completion_ids, eos)
    assert torch.equal(r.completion_mask, mask.float()) and torch.equal(r.truncated, truncated)
    assert torch.equal(r.lengths, r.completion_mask.sum(-1).long())
    assert (r.completion_ids[r.completion_mask == 0] == tok.pad_token_id).all() and (r.logp[r.completion_mask == 0] == 0).all()
    ref, _ = ref_logprobs64(model, r, 0.8)
    torch.testing.assert_close(r.logp.double(), ref, atol=1e-5, rtol=0)
    re = token_logprobs(model, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask, 0.8, group_size=G)
    torch.testing.assert_close(re, r.logp, atol=1e-5, rtol=0)


def test_budget_sub_batch_drops_padding_columns(tok, model):
    calls, h = count_prefills(model)
    try: sample(model, tok, PROMPTS, 2, 4, max_batch_tokens=1)   # one group per sub-batch, whatever the budget
    finally: h.remove()
    assert [tuple(s) for s in calls] == [(1, len(p)) for p in PROMPTS]          # each prompt alone, unpadded


def test_budget_with_eos_as_pad():
    t = char_tokenizer('ab+= ', pad_token=None)
    m = tiny_model(t)
    with pytest.warns(UserWarning, match='no pad token'):
        r = sample(m, t, PROMPTS, 3, 12, generator=torch.Generator().manual_seed(0), max_batch_tokens=1)
    eos = t.eos_token_id
    for i in range(len(r)):
        row = r.completion_ids[i].tolist()
        n = row.index(eos) + 1 if eos in row else len(row)
        assert int(r.lengths[i]) == n and bool(r.truncated[i]) == (eos not in row)
    re = token_logprobs(m, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)
    torch.testing.assert_close(re, r.logp, atol=1e-5, rtol=0)


def test_budget_sharded_uses_max_prompt_len(tok, model):
    calls, h = count_prefills(model)
    try:   # width 8 + 4: a budget of 2 groups x 2 x 12 tokens cuts 2 sub-batches even though the prompts are shorter
        r = sample(model, tok, ['a', 'b', 'ab'], 2, 4, max_prompt_len=8, all_done=lambda d: d, max_batch_tokens=2 * 2 * 12)
    finally: h.remove()
    assert len(calls) == 2 and len(r) == 6
    with pytest.raises(ValueError, match='max_prompt_len'):
        sample(model, tok, ['a'], 2, 4, all_done=lambda d: d, max_batch_tokens=100)


@pytest.mark.parametrize('bad', [0, -5, True, 2.5, '100'])
def test_budget_bad_values(tok, model, bad):
    with pytest.raises(ValueError, match='max_batch_tokens must be None or an int >= 1'):
        sample(model, tok, PROMPTS, 2, 4, max_batch_tokens=bad)


# ---------------------------------------------------------------- bf16 autocast
def cache_dtypes(model):
    "A set that collects the (key, value) dtypes of the cache every decode step receives, and the hook handle."
    seen = set()
    def hook(module, args, kwargs):
        cache = kwargs.get('cache', kwargs.get('past_key_values'))
        if cache is not None: seen.update((layer.keys.dtype, layer.values.dtype) for layer in cache.layers)
    return seen, model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize('attn', ['sdpa', 'eager'])
def test_bf16_autocast_cache_dtype_and_logprobs(tok, attn):
    m = tiny_model(tok, attn_implementation=attn, kv_heads=2)
    seen, h = cache_dtypes(m)
    try:
        with torch.autocast('cpu', dtype=torch.bfloat16):
            r = sample(m, tok, PROMPTS, 4, 12, 0.9, generator=torch.Generator().manual_seed(0))
    finally:
        h.remove()
    with torch.autocast('cpu', dtype=torch.bfloat16):   # the scoring pass's cache is not the sampler's
        re16 = token_logprobs(m, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask, 0.9, group_size=4)
    assert seen == {(torch.bfloat16, torch.bfloat16)}
    on = r.completion_mask > 0
    assert r.logp.dtype == torch.float32 and torch.isfinite(r.logp).all()
    gap = (re16 - r.logp)[on].abs()
    assert gap.max() < 2e-2 and gap.mean() < 2e-3
    fp32 = sample(m, tok, PROMPTS, 4, 12, 0.9, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(fp32.logp, r.logp)                       # autocast really was on
    seen32, h = cache_dtypes(m)
    try: sample(m, tok, PROMPTS, 2, 4)
    finally: h.remove()
    assert seen32 == {(torch.float32, torch.float32)}                # outside autocast nothing changes


def test_bf16_preallocated_cache_gives_the_same_answer(tok, model):
    from carerft.rollout import _decode
    pids, pmask = encode_prompts(tok, PROMPTS, tok.pad_token_id)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        runs = [_decode(model, pids, pmask, 3, 12, torch.tensor([tok.eos_token_id]), tok.pad_token_id, 0.9,
                        torch.Generator().manual_seed(1), None, None, None, preallocate=p) for p in (True, False)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_bf16_budget_split(tok, model):
    with torch.autocast('cpu', dtype=torch.bfloat16):
        a = sample(model, tok, PROMPTS, 3, 10, generator=torch.Generator().manual_seed(3), max_batch_tokens=10**6)
        b = sample(model, tok, PROMPTS, 3, 10, generator=torch.Generator().manual_seed(3))
        c = sample(model, tok, PROMPTS, 3, 10, generator=torch.Generator().manual_seed(3), max_batch_tokens=1)
        re = token_logprobs(model, c.prompt_ids, c.prompt_mask, c.completion_ids, c.completion_mask)
    assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.logp, b.logp)
    torch.testing.assert_close(re, c.logp, atol=2e-2, rtol=0)
