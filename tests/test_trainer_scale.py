"Paper-scale trainer options: token-budget micro-batches, schedules, weighted rewards, trackers, bf16, IS correction."

import copy
import os
import subprocess
import sys
import textwrap
import json
import math
from pathlib import Path

import pytest
import torch
from transformers import get_scheduler

import carerft.trainer as trainer_mod
from carerft.algos import DAPO, GRPO, GSPO
from carerft.divergences import NoKL, RKL, SRKL
from carerft.rollout import sample, token_logprobs
from carerft.tiny import char_tokenizer, tiny_model
from carerft.trainer import (
    RFTConfig,
    RFTTrainer,
    _token_micro_batches,
    _update_policy,
    make_optimizer,
    make_scheduler,
)

TOK = char_tokenizer('abcx')
DATA = [dict(prompt=p, target=t) for p, t in [('x', 'a'), ('xx', 'b'), ('xxx', 'c'), ('xa', 'a'), ('xb', 'b')]]


def target_frac(prompts, completions, target, **_):
    "Fraction of the completion made of the row's target character."
    return [c.count(t) / max(1, len(c)) for c, t in zip(completions, target)]


def length_bonus(prompts, completions, **_):
    return [len(c) / 8 for c in completions]


def make(out, reward=target_frac, **kw):
    model = tiny_model(TOK, hidden=32, layers=1, heads=2, seed=0)
    base = dict(reg=SRKL(0.04, 0.8), group_size=4, prompts_per_step=2, max_new_tokens=6, lr=1e-2, steps=2)
    cfg = RFTConfig(**(base | dict(save_every=0, output_dir=str(out), progress=False) | kw))
    return RFTTrainer(model, TOK, DATA, reward, cfg, ref_model=copy.deepcopy(model))


def log_of(out):
    return [json.loads(line) for line in open(Path(out) / 'log.jsonl')]


# ---- token-budget micro-batches ----
@pytest.fixture(scope='module')
def batch():
    "A real rollout of 3 prompts of different lengths x 4 completions of different lengths, with rewards."
    m = tiny_model(TOK, hidden=32, layers=1, heads=2, seed=0)
    r = sample(m, TOK, ['x', 'xxa', 'xb'], 4, 8, generator=torch.Generator().manual_seed(3))
    r.rewards = torch.tensor([1.0, 0, 0.5, 0, 1, 1, 0, 0.2, 0, 0.3, 1, 0])
    return m, r


def one_update(m0, r, num_iterations=1, **kw):
    "Weights after one SGD(lr=1) update of a copy of m0 on r: the (summed) gradient itself."
    acc = trainer_mod._accelerator('no')  # fp32 whatever an earlier test left in accelerate's shared state
    m = copy.deepcopy(m0)
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    m, opt, sched = acc.prepare(m, opt, get_scheduler('constant', opt))
    cfg = RFTConfig(**(dict(reg=RKL(0.1), group_size=4, prompts_per_step=3, num_iterations=num_iterations) | kw))
    ref = token_logprobs(m0, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask).detach()
    stats = _update_policy(m, opt, sched, acc, cfg, r, ref * 0.9)
    return torch.cat([p.detach().flatten() for p in m.parameters()]), stats


@pytest.mark.parametrize('algo', [GRPO(), DAPO(), GSPO()], ids=repr)
@pytest.mark.parametrize('num_iterations', [1, 2])
def test_token_micro_batches_equal_the_unsplit_update(batch, algo, num_iterations):
    m0, r = batch
    widths = r.prompt_mask.sum(-1) + r.completion_mask.sum(-1)
    assert widths.unique().numel() > 2  # rows of several lengths: the packing matters
    w_full, _ = one_update(m0, r, num_iterations, algo=algo, entropy_coef=0.01)
    for budget in (1, int(widths.max()), 3 * int(widths.max()), 10_000):  # alone, 1-2 rows, a few rows, one batch
        w_tok, _ = one_update(m0, r, num_iterations, algo=algo, entropy_coef=0.01, micro_batch_tokens=budget)
        torch.testing.assert_close(w_tok, w_full, rtol=0, atol=1e-5, msg=f'{algo!r} budget={budget}')
    assert not torch.equal(w_full, torch.cat([p.flatten() for p in m0.parameters()]))


def test_token_micro_batches_property_sweep():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        n = int(torch.randint(1, 30, (1,), generator=g))
        P, T = torch.randint(1, 20, (n,), generator=g), torch.randint(1, 60, (n,), generator=g)
        budget = int(torch.randint(1, 400, (1,), generator=g))
        mbs = _token_micro_batches(P, T, budget)
        assert sorted(torch.cat(mbs).tolist()) == list(range(n))  # every row exactly once
        for ix in mbs:
            assert ix.tolist() == sorted(ix.tolist())
            assert len(ix) == 1 or len(ix) * (P[ix].max() + T[ix].max()) <= budget
        if budget >= n * int((P + T).max()) + n * 100:
            assert len(mbs) == 1  # a budget for everything: one micro-batch


def test_micro_batch_tokens_run_and_config_errors(tmp_path):
    make(tmp_path, micro_batch_tokens=12).train()
    rows = log_of(tmp_path)
    assert len(rows) == 2 and all(math.isfinite(r['loss']) for r in rows)
    with pytest.raises(ValueError, match='micro_batch_tokens'):
        RFTConfig(micro_batch_tokens=0)
    with pytest.raises(ValueError, match='micro_batch_tokens=64 sizes'):
        RFTConfig(micro_batch_tokens=64, grad_accum_steps=2)


# ---- optimiser and schedule ----
def test_trainer_lr_follows_cosine_with_min_lr(tmp_path):
    t = make(tmp_path, steps=10, lr=1e-3, lr_schedule='cosine_with_min_lr', min_lr_rate=0.1, warmup_ratio=0.2)
    t.train()
    lrs = [r['lr'] for r in log_of(tmp_path)]  # the lr after each step's scheduler step
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3)  # warm-up: 2 steps
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:]))
    assert lrs[-1] == pytest.approx(1e-4)  # the floor at the last step


def test_schedule_equals_transformers_reference():
    cfg = RFTConfig(lr=2.0, steps=30, lr_schedule='cosine_with_min_lr', min_lr_rate=0.25, warmup_ratio=0.1)
    opt = make_optimizer(torch.nn.Linear(2, 2).parameters(), cfg)
    ref_opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=2.0)
    ours = make_scheduler(opt, cfg)
    ref = get_scheduler(
        'cosine_with_min_lr',
        ref_opt,
        num_warmup_steps=3,
        num_training_steps=30,
        scheduler_specific_kwargs=dict(min_lr_rate=0.25),
    )
    for _ in range(30):
        assert ours.get_last_lr() == pytest.approx(ref.get_last_lr())
        opt.step(), ref_opt.step(), ours.step(), ref.step()
    assert ours.get_last_lr()[0] == pytest.approx(0.5)


def test_adamw8bit_without_bitsandbytes_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'bitsandbytes', None)              # as if it were not installed
    with pytest.raises(ValueError, match=r"optimizer='adamw8bit' needs bitsandbytes: pip install carerft\[bnb\]"):
        make(tmp_path, optimizer='adamw8bit')


# ---- several rewards ----
def test_weighted_rewards_and_their_means(tmp_path):
    t = make(tmp_path, reward=[target_frac, length_bonus], reward_weights=[1.0, 0.5], algo=GRPO(), steps=2)
    t.train()
    for row in log_of(tmp_path):
        assert {'reward_target_frac', 'reward_length_bonus'} <= set(row)
        want = row['reward_target_frac'] + 0.5 * row['reward_length_bonus']
        assert row['reward_mean'] == pytest.approx(want, abs=1e-6)  # GRPO shapes nothing: the weighted sum
    one = make(tmp_path / 'one', algo=GRPO(), steps=1).train_step()
    assert one['reward_target_frac'] == pytest.approx(one['reward_mean'])  # one function: its mean is the reward
    with pytest.raises(ValueError, match='reward_weights has 3 weights for 2 reward functions'):
        make(tmp_path / 'bad', reward=[target_frac, length_bonus], reward_weights=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match='reward_weights has 2 weights for 1'):
        make(tmp_path / 'bad1', reward_weights=[1.0, 1.0])


def test_dynamic_sampling_keeps_reward_parts(tmp_path):
    t = make(tmp_path, reward=[target_frac, length_bonus], algo=DAPO(overlong_penalty=0.0), steps=2)
    t.train()
    rows = log_of(tmp_path)
    assert all(0 <= r['reward_target_frac'] <= 1 for r in rows if 'reward_target_frac' in r)


# ---- trackers ----
def test_log_with_tensorboard_writes_the_scalars(tmp_path):
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    t = make(tmp_path, log_with='tensorboard', steps=3)
    t.train()
    t.end()
    events = list((tmp_path / 'tensorboard').rglob('events.out.tfevents*'))
    assert events, list(tmp_path.rglob('*'))
    scalars = {}
    for e in events:
        acc = EventAccumulator(str(e)).Reload()
        for tag in acc.Tags()['scalars']:
            scalars[tag] = [(s.step, s.value) for s in acc.Scalars(tag)]
    rows = log_of(tmp_path)
    assert [s for s, _ in scalars['reward_mean']] == [1, 2, 3]
    for (_, v), row in zip(scalars['reward_mean'], rows):
        assert v == pytest.approx(row['reward_mean'], abs=1e-6)
    assert 'logp_gap' in scalars and 'reward_target_frac' in scalars
    make(tmp_path, overwrite=True)  # overwrite clears the previous run's tracker folder too
    assert not list((tmp_path / 'tensorboard').rglob('events.out.tfevents*'))


def test_log_with_unknown_tracker_names_the_field():
    with pytest.raises(ValueError, match="log_with must be None or comma-separated tracker names"):
        RFTConfig(log_with='tensorboard,nonsense')


# ---- bf16, mismatch, importance sampling ----
def test_mismatch_is_zero_in_fp32_and_correction_is_the_identity(tmp_path):
    a = make(tmp_path / 'a', reg=NoKL(), steps=2)
    wa = a.train().state_dict()
    b = make(tmp_path / 'b', reg=NoKL(), steps=2, is_correction='sequence_mask', is_cap=2.0)
    wb = b.train().state_dict()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=1e-5)
    for row in log_of(tmp_path / 'b'):
        assert row['logp_gap'] < 1e-4 and row['ratio_outside'] == 0.0
        assert row['is_weight_mean'] == pytest.approx(1.0, abs=1e-3)
    assert 'is_weight_mean' not in log_of(tmp_path / 'a')[0]


def test_correction_reweights_with_several_iterations(batch):
    "num_iterations=2: the sampler's log-probs are perturbed, the correction must change the update."
    m0, r = batch
    r2 = copy.copy(r)
    r2.logp = r.logp - 0.3 * r.completion_mask  # a sampler that under-rates its tokens: weights e^0.3 per token
    w_plain, s_plain = one_update(m0, r2, 2, algo=GRPO())
    w_is, s_is = one_update(m0, r2, 2, algo=GRPO(), is_correction='token_truncate', is_cap=3.0)
    assert s_plain['logp_gap'] == pytest.approx(0.3, abs=1e-4) and s_plain['ratio_outside'] == 1.0
    assert s_is['is_weight_mean'] == pytest.approx(math.exp(0.3), rel=1e-3)
    assert not torch.allclose(w_plain, w_is, atol=1e-6)


@pytest.fixture
def fresh_accelerate_state():
    "accelerate keeps one process-wide state: bf16 needs it fresh, and the tests after it need it back."
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def test_bf16_keeps_fp32_weights(tmp_path, monkeypatch, fresh_accelerate_state):
    seen = []
    real = trainer_mod.sample

    def spy(*a, **k):
        seen.append((torch.is_autocast_enabled('cpu'), k.get('max_batch_tokens')))
        return real(*a, **k)

    monkeypatch.setattr(trainer_mod, 'sample', spy)
    t = make(tmp_path, bf16=True, steps=1, rollout_batch_tokens=16)
    t.train()
    assert seen and all(on for on, _ in seen)  # sampling ran under bf16 autocast
    assert all(budget == 16 for _, budget in seen)  # rollout_batch_tokens reaches the sampler
    assert all(p.dtype == torch.float32 for p in t.accelerator.unwrap_model(t.model).parameters())
    row = log_of(tmp_path)[0]
    assert math.isfinite(row['loss']) and math.isfinite(row['logp_gap'])


# ---- FSDP2: weights gathered once per rollout, not once per decoded token (issue 11, item 9) ----
FSDP2_SCRIPT = textwrap.dedent('''
    import json, sys, torch, torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    import torch.distributed.fsdp._fully_shard._fsdp_param_group as fsdp_group
    from carerft.rollout import sample
    from carerft.tiny import char_tokenizer, tiny_model
    from carerft.trainer import gathered_weights
    dist.init_process_group('gloo')
    rank = dist.get_rank()
    tok = char_tokenizer('abc0123456789+=')
    prompts = ['1+2=', '3+4=']
    def draw(model, **kw):
        return sample(model, tok, prompts, 3, 6, 1.0, 16, torch.Generator().manual_seed(7), **kw).completions
    want = draw(tiny_model(tok, hidden=32, layers=2, heads=2, seed=3))         # the unsharded model
    model = tiny_model(tok, hidden=32, layers=2, heads=2, seed=3)
    mesh = init_device_mesh('cpu', (dist.get_world_size(),))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    gathers = [0]
    real = fsdp_group.foreach_all_gather
    def counted(*a, **k):
        gathers[0] += 1
        return real(*a, **k)
    fsdp_group.foreach_all_gather = counted
    with gathered_weights(model) as any_sharded:
        at_entry = gathers[0]
        got = draw(model)                                                      # no all_done: each process on its own
        inside = gathers[0] - at_entry
    before = gathers[0]
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 2, 3]]))
    out = dict(any_sharded=any_sharded, at_entry=at_entry, inside=inside, after=gathers[0] - before,
               same=got == want, n=len(got))
    json.dump(out, open(sys.argv[1] + f'/rank{rank}.json', 'w'))
    dist.destroy_process_group()
''')


def test_fsdp2_weights_gathered_once_per_rollout(tmp_path):
    "Two CPU processes, a tiny model sharded with torch's fully_shard: one gather per module, none while decoding."
    (tmp_path / 'fsdp2.py').write_text(FSDP2_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', str(tmp_path / 'fsdp2.py'),
                        str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for rank in (0, 1):
        got = json.loads((tmp_path / f'rank{rank}.json').read_text())
        assert got['any_sharded'] and got['at_entry'] == 3              # three sharded modules, each gathered once
        assert got['inside'] == 0 and got['n'] == 6                      # 6 tokens x 6 sequences decoded, no gather
        assert got['same']                                                # the samples of the unsharded model
        assert got['after'] == 3                                          # sharded again: a forward gathers again


@pytest.mark.parametrize('kw', [dict(micro_batch_tokens=1), dict(micro_batch_tokens=25), dict(grad_accum_steps=2)])
def test_reference_scored_in_the_update_micro_batches(tmp_path, batch, kw):
    "The reference pass runs in the update's micro-batches (bounded memory) and gives the unsplit pass's log-probs."
    _, r = batch
    t = make(tmp_path, **kw)
    want = token_logprobs(t.ref_model, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)
    chunks = trainer_mod._micro_batches_of(t.config, r)
    assert len(chunks) > 1                                                    # it really is split
    torch.testing.assert_close(t._ref_logprobs(r), want * r.completion_mask, rtol=0, atol=1e-5)


# ---- 8-bit AdamW: runs where bitsandbytes is installed (pip install carerft[bnb]; on the CPU too since 0.48) ----
def test_adamw8bit_trains_with_8bit_moments_and_resumes_exactly(tmp_path):
    "Issue 11's 7B option: 8-bit moments for the large tensors, exact resume, one step close to torch's AdamW."
    bnb = pytest.importorskip('bitsandbytes')
    a = make(tmp_path / 'a', steps=4, optimizer='adamw8bit')
    a.train()
    assert type(a.opt.optimizer) is bnb.optim.AdamW8bit
    big = [p for p in a.model.parameters() if p.numel() >= 4096]      # bitsandbytes keeps small tensors' moments fp32
    assert big and all(a.opt.optimizer.state[p]['state1'].dtype == torch.uint8 for p in big)
    want = {k: v.detach().clone() for k, v in a.model.state_dict().items()}
    b = make(tmp_path / 'b', steps=4, optimizer='adamw8bit')
    b.train(until=2)
    c = make(tmp_path / 'b', steps=4, optimizer='adamw8bit', resume=True)
    c.train()                                                         # 8-bit moments and their scales saved and loaded
    for k, v in c.model.state_dict().items():
        torch.testing.assert_close(v, want[k], rtol=0, atol=0, msg=k)
    one8, one32 = make(tmp_path / 'c', steps=1, optimizer='adamw8bit'), make(tmp_path / 'd', steps=1)
    w0 = {k: v.detach().clone() for k, v in one32.model.state_dict().items()}
    one8.train(), one32.train()                                       # same rollout, same gradient, one step each
    for k, v in one8.model.state_dict().items():
        step32 = one32.model.state_dict()[k] - w0[k]                  # ~ lr * sign(g) on Adam's first step
        torch.testing.assert_close(v - w0[k], step32, rtol=0, atol=0.05 * 1e-2, msg=k)   # within 5% of lr = 1e-2
