"Trainer integration: exact resume, Ctrl-C checkpoints, every algo x regulariser end to end, a learnable task, two processes."
import copy, json, os, subprocess, sys, textwrap
from pathlib import Path
import pytest
import torch
from carerft.tiny import char_tokenizer, tiny_model
from carerft.divergences import NoKL, RKL, SRKL
from carerft.algos import GRPO, DAPO, GSPO
from carerft.trainer import RFTConfig, RFTTrainer

TOK = char_tokenizer('abcx')
DATA = [dict(prompt=p, target=t) for p, t in [('x', 'a'), ('xx', 'b'), ('xxx', 'c'), ('xa', 'a'), ('xb', 'b'), ('xc', 'c')]]

def reward(prompts, completions, target, **_):
    "Fraction of the completion made of the row's target character."
    return [c.count(t) / max(1, len(c)) for c, t in zip(completions, target)]

def make(out, steps=6, algo=None, reg=None, seed=0, lr=1e-2, **kw):
    torch.manual_seed(123)   # trainer must not depend on the global RNG state it was created in
    model = tiny_model(TOK, hidden=32, layers=1, heads=2, seed=0)
    cfg = RFTConfig(**(dict(algo=algo or GRPO(), reg=reg or SRKL(0.04, 0.8), group_size=4, prompts_per_step=2, max_new_tokens=4,
                            lr=lr, steps=steps, seed=seed, output_dir=str(out), progress=False) | kw))
    return RFTTrainer(model, TOK, DATA, reward, cfg, ref_model=copy.deepcopy(model))

def weights(model): return {k: v.detach().clone() for k, v in model.state_dict().items()}

@pytest.mark.parametrize('algo', [GRPO(), DAPO(), GSPO()], ids=repr)
def test_resume_is_exact(tmp_path, algo):
    "3 steps + resume + 3 steps == 6 uninterrupted steps: weights, optimiser moments, data order and sampling RNG."
    a = make(tmp_path / 'a', algo=algo, save_every=0); wa = weights(a.train())
    b = make(tmp_path / 'b', algo=algo, save_every=0); b.train(until=3)
    assert (tmp_path / 'b' / 'checkpoints' / 'step-3').exists()
    c = make(tmp_path / 'b', algo=algo, save_every=0, resume=True)
    assert c.state.step == 3
    wc = weights(c.train())
    for k in wa: torch.testing.assert_close(wc[k], wa[k], rtol=0, atol=0, msg=k)
    la = [json.loads(l) for l in open(tmp_path / 'a' / 'log.jsonl')]
    lb = [json.loads(l) for l in open(tmp_path / 'b' / 'log.jsonl')]
    assert [r['reward_mean'] for r in la] == [r['reward_mean'] for r in lb]

def test_resume_differs_without_state(tmp_path):
    "Guard: the exactness test can fail (a fresh trainer on the same steps does not match the resumed one)."
    a = make(tmp_path / 'a', save_every=0); wa = weights(a.train())
    b = make(tmp_path / 'b', steps=3, save_every=0); b.train()
    c = make(tmp_path / 'c', steps=3, save_every=0, seed=1)   # no resume: a different data/sampling stream
    c.model.load_state_dict(b.model.state_dict()); wc = weights(c.train())
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)

def test_ctrl_c_saves_a_checkpoint(tmp_path):
    calls = {'n': 0}
    def interrupting(prompts, completions, **kw):
        calls['n'] += 1
        if calls['n'] == 3: raise KeyboardInterrupt
        return reward(prompts, completions, **kw)
    t = make(tmp_path, save_every=0); t.reward_fn = interrupting
    with pytest.raises(KeyboardInterrupt): t.train()
    assert (tmp_path / 'checkpoints' / 'step-2').exists()
    r = make(tmp_path, resume=True, save_every=0); assert r.state.step == 2
    r.train(); assert r.state.step == 6 and (tmp_path / 'final' / 'config.json').exists()

@pytest.mark.parametrize('reg', [NoKL(), RKL(0.04), SRKL(0.04, 0.8)], ids=repr)
@pytest.mark.parametrize('algo', [GRPO(), DAPO(), GSPO()], ids=repr)
def test_all_pairs_run_and_log(tmp_path, algo, reg):
    t = make(tmp_path, steps=2, algo=algo, reg=reg, save_every=0, num_iterations=2, grad_accum_steps=2)
    t.train()
    rows = [json.loads(l) for l in open(tmp_path / 'log.jsonl')]
    assert len(rows) == 2
    keys = {'reward_mean', 'reward_std', 'frac_zero_std', 'rkl', 'srkl', 'penalty', 'clip_low_frac', 'clip_high_frac',
            'entropy', 'completion_length', 'truncation_rate', 'time_generate', 'time_update'}
    assert keys <= set(rows[-1]), keys - set(rows[-1])
    assert all(r['rkl'] >= 0 and r['srkl'] >= 0 for r in rows)       # a ref model is given: logged for every reg
    if isinstance(reg, NoKL): assert all(r['penalty'] == 0 for r in rows)
    else: assert rows[-1]['penalty'] > 0

def test_reward_rises_on_a_learnable_task(tmp_path):
    "Trivially learnable: every row's target is 'a', so the reward is the fraction of 'a' in the completion."
    t = make(tmp_path, steps=40, reg=RKL(0.01), save_every=0, lr=3e-2)
    t.rows = [dict(r, target='a') for r in t.rows]
    t.train()
    rows = [json.loads(l) for l in open(tmp_path / 'log.jsonl')]
    first, last = [sum(r['reward_mean'] for r in rows[s]) / 8 for s in (slice(0, 8), slice(-8, None))]
    assert last > first + 0.25, (first, last)

def test_dynamic_sampling_drops_all_equal_groups(tmp_path):
    "Groups with all-equal rewards never reach the loss; the cap warns when no group has signal."
    t = make(tmp_path, steps=1, algo=DAPO(overlong_penalty=0.0), save_every=0)
    t.reward_fn = lambda p, c, **_: [1.0] * len(c)             # every group all-equal
    with pytest.warns(UserWarning, match='max_rounds'): row = t.train_step()
    assert row['groups_kept'] == 0

def test_bad_input(tmp_path):
    m = tiny_model(TOK, hidden=32, layers=1, heads=2)
    with pytest.raises(ValueError, match='ref_model'): RFTTrainer(m, TOK, DATA, reward, RFTConfig(reg=SRKL(), output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match='group_size'): RFTConfig(group_size=1)
    with pytest.raises(ValueError, match='alpha'): RFTConfig(reg=SRKL(alpha=1.2))
    long = [dict(prompt='x' * 50, target='a')]
    t = RFTTrainer(m, TOK, long, reward, RFTConfig(reg=NoKL(), max_prompt_len=10, output_dir=str(tmp_path), progress=False))
    with pytest.raises(ValueError, match='max_prompt_len'): t.train_step()

def launch_cpu2(*argv: str):
    """Run `argv` (a script and its arguments) under `accelerate launch` with 2 CPU processes (gloo DDP) and assert exit
    code 0. accelerate 1.15's `--cpu --num_processes 2` runs its simple single-process launcher; two CPU processes need
    the multi-process launcher plus ACCELERATE_USE_CPU=true. A collective mismatch hangs, so the run has a timeout: it
    fails instead of blocking."""
    env = dict(os.environ, OMP_NUM_THREADS='1', ACCELERATE_USE_CPU='true')
    r = subprocess.run([sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2',
                        '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no', *argv],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

def launch2(tmp_path, name: str, script: str) -> dict:
    "Run `script` (formatted with tests= and out=) on 2 CPU processes and return the JSON it wrote to out/name.json."
    path = tmp_path / f'{name}.py'
    path.write_text(script.format(tests=str(Path(__file__).parent), out=str(tmp_path)))
    launch_cpu2(str(path))
    return json.loads((tmp_path / f'{name}.json').read_text())

SCRIPT = textwrap.dedent('''
    import copy, sys, json, torch
    sys.path.insert(0, {tests!r})
    from test_trainer import make
    t = make({out!r}, steps=2, save_every=0)
    t.train()
    acc = t.accelerator
    w = torch.cat([p.detach().flatten() for p in t.model.parameters()])
    ws = acc.gather(w[None])
    if acc.is_main_process:
        json.dump(dict(n=acc.num_processes, same=bool(torch.equal(ws[0], ws[-1]))), open({out!r} + '/ddp.json', 'w'))
    t.end()                                          # drop the DDP wrapper, then the process group: exit cleanly
''')

def test_two_process_accelerate_launch(tmp_path):
    "The same trainer under `accelerate launch` with 2 CPU processes (gloo DDP): both ranks end with identical weights."
    assert launch2(tmp_path, 'ddp', SCRIPT) == dict(n=2, same=True)

RESUME_SCRIPT = textwrap.dedent('''
    import sys, json, torch
    sys.path.insert(0, {tests!r})
    from test_trainer import make, reward
    from carerft.algos import DAPO
    def flat(t): return torch.cat([p.detach().flatten() for p in t.model.parameters()])
    def sparse(prompts, completions, **kw):          # prompts 'xx' and 'xxx' always give all-equal (zero) rewards
        return [0.0 if p in ('xx', 'xxx') else r for p, r in zip(prompts, reward(prompts, completions, **kw))]
    def run(out, **kw):
        t = make(out, steps=4, algo=DAPO(overlong_penalty=0.0), save_every=0, max_sampling_rounds=3, **kw); t.reward_fn = sparse
        return t
    a = run({out!r} + '/a'); a.train()
    b = run({out!r} + '/b'); b.train(until=2)
    c = run({out!r} + '/b', resume=True); c.train()
    acc = a.accelerator
    same = acc.gather(torch.tensor([torch.equal(flat(a), flat(c))]))                  # every rank: resumed == straight
    pos = acc.gather(torch.tensor([[a.state.epoch, a.state.pos, c.state.epoch, c.state.pos]]))
    seeds = acc.gather(torch.tensor([a.state.gen.initial_seed()]))
    if acc.is_main_process:
        json.dump(dict(n=acc.num_processes, same=same.tolist(), pos=pos.tolist(), seeds=seeds.tolist()), open({out!r} + '/resume.json', 'w'))
    del a, b, acc; c.end()                           # every DDP wrapper goes before the process group
''')

def test_two_process_resume_with_dynamic_sampling(tmp_path):
    """Two processes, DAPO with dynamic sampling (ranks refill different numbers of times on their own): 2 steps +
    resume + 2 steps equals 4 steps on every rank, the ranks stay at the same data position, and they sample from
    different random streams."""
    res = launch2(tmp_path, 'resume', RESUME_SCRIPT)
    assert res['n'] == 2 and res['same'] == [True, True]
    assert res['pos'][0] == res['pos'][1]                 # same (epoch, pos) on both ranks, straight and resumed
    assert res['seeds'][0] != res['seeds'][1]             # independent sampling streams

SYNC_SCRIPT = textwrap.dedent('''
    import sys, json, torch
    sys.path.insert(0, {tests!r})
    from test_trainer import make
    res = {{}}
    for synced in (False, True):
        t = make({out!r} + f'/{{synced}}', steps=1, save_every=0, max_new_tokens=24)   # EOS allowed: rows stop early
        t._sharded = synced                       # what FSDP / ZeRO-3 set: decode through the wrapper, stop together
        calls = [0]
        t.accelerator.unwrap_model(t.model).register_forward_pre_hook(lambda m, a: calls.__setitem__(0, calls[0] + 1))
        row = t.train_step()
        res[str(synced)] = t.accelerator.gather(torch.tensor([calls[0]])).tolist()
    # LoRA without a reference model: the reference pass switches the adapter off on the inner model and, with sharded
    # weights, runs through the wrapper (counted by a hook on it); the log-probs equal the unwrapped path's
    from test_trainer import TOK, DATA, reward
    from carerft.tiny import tiny_model
    from carerft.trainer import RFTConfig, RFTTrainer
    from carerft.rollout import token_logprobs
    cfg = RFTConfig(group_size=4, prompts_per_step=2, max_new_tokens=4, steps=1, save_every=0, progress=False,
                    output_dir={out!r} + '/lora', lora=dict(r=4, lora_alpha=8, target_modules='all-linear', init_lora_weights=False))
    t = RFTTrainer(tiny_model(TOK, hidden=32, layers=1, heads=2, seed=0), TOK, DATA, reward, cfg)
    r, _ = t._collect()
    wrapper = [0]; t.model.register_forward_pre_hook(lambda m, a, k: wrapper.__setitem__(0, wrapper[0] + 1), with_kwargs=True)
    t._sharded = True; sharded = t._ref_logprobs(r); calls = wrapper[0]
    t._sharded = False; plain = t._ref_logprobs(r)
    on = token_logprobs(t.accelerator.unwrap_model(t.model), r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask, 1.0)
    m = r.completion_mask.bool()
    ok = [calls > 0, bool(torch.allclose(sharded[m], plain[m], atol=1e-6)), not torch.allclose(on[m], plain[m], atol=1e-3)]
    res['lora'] = t.accelerator.gather(torch.tensor([ok])).tolist()
    if t.accelerator.is_main_process: json.dump(res, open({out!r} + '/sync.json', 'w'))
    t.end()
''')

def test_two_process_sharded_decode_stops_together(tmp_path):
    """With sharded weights (FSDP, ZeRO-3) each forward is a collective, so every process must run the same number of
    decode steps. Under 2-process DDP (where a mismatch does not hang) the forward calls per process are counted: they
    differ when each process stops on its own, and are equal once the stop is decided jointly. The LoRA reference pass
    (adapter off) goes through the wrapper too, and gives the same log-probs as the unwrapped model."""
    res = launch2(tmp_path, 'sync', SYNC_SCRIPT)
    assert res['False'][0] != res['False'][1]            # guard: on their own, the processes stop at different steps
    assert res['True'][0] == res['True'][1]              # jointly: the same number of forwards
    assert res['lora'] == [[True, True, True]] * 2       # LoRA reference: through the wrapper, equal, and not the policy

def test_lora_without_reference_and_gradient_checkpointing(tmp_path):
    "With a LoRA adapter the reference is the base model with the adapter switched off: no ref_model needed."
    pytest.importorskip('peft')
    model = tiny_model(TOK, hidden=32, layers=1, heads=2, seed=0)
    cfg = RFTConfig(reg=SRKL(0.04, 0.8), group_size=4, prompts_per_step=2, max_new_tokens=4, lr=1e-2, steps=2,
                    output_dir=str(tmp_path), progress=False, save_every=0, gradient_checkpointing=True,
                    lora=dict(r=4, lora_alpha=8, target_modules='all-linear'))
    t = RFTTrainer(model, TOK, DATA, reward, cfg)
    base = {k: v.clone() for k, v in t.model.state_dict().items() if 'lora' not in k}
    t.train()
    rows = [json.loads(l) for l in open(tmp_path / 'log.jsonl')]
    # step 1: the adapter starts at zero, so policy == reference up to rounding: the sampler's cached decode and the
    # reference's full forward run different kernels (1e-15 seen, never bit-exact by construction)
    assert abs(rows[0]['rkl']) < 1e-6 and rows[-1]['rkl'] > 1e-4, (rows[0]['rkl'], rows[-1]['rkl'])
    assert all(torch.equal(v, t.model.state_dict()[k]) for k, v in base.items())   # only the adapter trains

def test_bf16_mixed_precision_runs(tmp_path):
    "bf16 autocast (accelerate's mixed_precision='bf16'), in a fresh process: accelerate's state is per process."
    code = (f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); from test_trainer import make; "
            f"t = make({str(tmp_path)!r}, steps=2, save_every=0, bf16=True); t.train(); "
            f"r = [json.loads(l) for l in open({str(tmp_path / 'log.jsonl')!r})]; assert all(x['loss'] == x['loss'] for x in r); print('ok')")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and 'ok' in r.stdout, r.stderr[-3000:]


# ---- reliability: interruptions, checkpoints, used folders, bad values (each test failed before its fix) ----
import signal
from carerft.trainer import TrainingInterrupted

def log_of(out): return [json.loads(l) for l in open(Path(out) / 'log.jsonl')]

def ctrl_c(): signal.raise_signal(signal.SIGINT)   # a real SIGINT, handled like a Ctrl-C in a terminal

def interrupt_at(t, point, step=3):
    "Send SIGINT at `point` of step `step` of trainer t."
    if point == 'reward':                      # sampling and scoring: nothing committed yet
        f = t.reward_fn
        def reward_fn(*a, **k):
            if t.state.step == step - 1: ctrl_c()
            return f(*a, **k)
        t.reward_fn = reward_fn
    elif point == 'reference':                 # the reference pass
        f = t._ref_logprobs
        def ref(r):
            if t.state.step == step - 1: ctrl_c()
            return f(r)
        t._ref_logprobs = ref
    elif point == 'backward':                  # inside forward/backward, before the optimiser step
        f = t.accelerator.backward
        def backward(loss, **k):
            f(loss, **k)
            if t.state.step == step - 1: ctrl_c()
        t.accelerator.backward = backward
    elif point == 'optimizer':                 # the optimiser step itself: the step commits, Ctrl-C is held back
        f = t.opt.step
        def opt_step(*a, **k):
            if t.state.step == step - 1: ctrl_c()
            return f(*a, **k)
        t.opt.step = opt_step
    elif point == 'callback':                  # after the log row was written
        t.callbacks.append(lambda tr, row: ctrl_c() if row['step'] == step else None)

@pytest.mark.parametrize('point, done', [('reward', 2), ('reference', 2), ('backward', 2), ('optimizer', 3), ('callback', 3)])
def test_sigint_anywhere_in_a_step_resumes_exactly(tmp_path, point, done):
    """A Ctrl-C at any point of step 3 leaves the state of the last completed step (2 before the optimiser step, 3
    after it), and resuming gives the same weights and log as a run never interrupted."""
    a = make(tmp_path / 'a', save_every=0); wa = weights(a.train())
    b = make(tmp_path / 'b', save_every=0); interrupt_at(b, point)
    with pytest.raises(TrainingInterrupted) as e: b.train()
    assert e.value.step == done and e.value.checkpoint == tmp_path / 'b' / 'checkpoints' / f'step-{done}'
    assert [r['step'] for r in log_of(tmp_path / 'b')] == list(range(1, done + 1))
    c = make(tmp_path / 'b', save_every=0, resume=True); assert c.state.step == done
    wc = weights(c.train())
    for k in wa: torch.testing.assert_close(wc[k], wa[k], rtol=0, atol=0, msg=k)
    assert [r['reward_mean'] for r in log_of(tmp_path / 'b')] == [r['reward_mean'] for r in log_of(tmp_path / 'a')]

def test_sigint_guard_can_fail(tmp_path, monkeypatch):
    "Guard: without undoing the unfinished step (the old behaviour) the resumed run differs from the straight one."
    a = make(tmp_path / 'a', save_every=0); wa = weights(a.train())
    import carerft.trainer as trainer_module
    monkeypatch.setattr(trainer_module._State, 'restore', lambda self, snap: setattr(self, 'step', snap['step']))
    b = make(tmp_path / 'b', save_every=0); interrupt_at(b, 'reward')
    with pytest.raises(TrainingInterrupted): b.train()
    wc = weights(make(tmp_path / 'b', save_every=0, resume=True).train())
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)

KILL_IN_SAVE = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import accelerate, torch
torch.set_num_threads({threads})                                  # the parent's kernels: results compared bit for bit
from test_trainer import make
save = accelerate.Accelerator.save_state
def dying_save(self, path, *a, **k):
    out = save(self, path, *a, **k)
    if path.endswith('step-4.tmp'):                               # step 4's files are written, not yet renamed...
        f = next(p for p in os.listdir(path) if p.endswith('.safetensors'))
        os.truncate(os.path.join(path, f), 100)                   # ...half of the model file is on disk...
        os.kill(os.getpid(), signal.SIGKILL)                      # ...and the process is killed (kill -9)
    return out
accelerate.Accelerator.save_state = dying_save
make({out!r}, save_every=1, keep_checkpoints=3).train()
"""

def test_kill_during_save_leaves_a_loadable_checkpoint(tmp_path):
    "kill -9 while a checkpoint is written: the half-written one is never taken for a checkpoint; resume is exact."
    a = make(tmp_path / 'a', save_every=0); wa = weights(a.train())
    r = subprocess.run([sys.executable, '-c', KILL_IN_SAVE.format(tests=str(Path(__file__).parent), out=str(tmp_path / 'b'),
                                                                threads=torch.get_num_threads())],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert (tmp_path / 'b' / 'checkpoints' / 'step-4.tmp').exists()
    assert len(log_of(tmp_path / 'b')) == 4                       # step 4 was logged before its checkpoint died
    c = make(tmp_path / 'b', save_every=1, keep_checkpoints=3, resume=True)
    assert c.state.step == 3
    wc = weights(c.train())
    for k in wa: torch.testing.assert_close(wc[k], wa[k], rtol=0, atol=0, msg=k)
    assert [r['step'] for r in log_of(tmp_path / 'b')] == [1, 2, 3, 4, 5, 6]   # step 4 redone, logged once
    assert not (tmp_path / 'b' / 'checkpoints' / 'step-4.tmp').exists()

def test_broken_newest_checkpoint_falls_back(tmp_path):
    "A checkpoint that does not load (a truncated model file) is skipped with a warning naming it; the one before loads."
    a = make(tmp_path / 'a', save_every=0); wa = weights(a.train())
    b = make(tmp_path / 'b', save_every=2, keep_checkpoints=2); b.train(until=4)
    f = next((tmp_path / 'b' / 'checkpoints' / 'step-4').glob('*.safetensors'))
    f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 2])
    with pytest.warns(UserWarning, match='step-4 does not load'):
        c = make(tmp_path / 'b', save_every=2, keep_checkpoints=2, resume=True)
    assert c.state.step == 2 and (tmp_path / 'b' / 'checkpoints' / 'step-4.broken').exists()
    wc = weights(c.train())
    for k in wa: torch.testing.assert_close(wc[k], wa[k], rtol=0, atol=0, msg=k)
    assert [r['step'] for r in log_of(tmp_path / 'b')] == [1, 2, 3, 4, 5, 6]

def test_no_checkpoint_loads(tmp_path):
    b = make(tmp_path, save_every=0); b.train(until=2)
    (tmp_path / 'checkpoints' / 'step-2' / 'optimizer.bin').write_bytes(b'garbage')
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match='overwrite=True'):
        make(tmp_path, save_every=0, resume=True)

def test_used_output_dir_is_refused_overwritten_or_resumed(tmp_path):
    make(tmp_path, steps=2, save_every=0).train()
    with pytest.raises(ValueError, match='already holds a run'): make(tmp_path, steps=2, save_every=0)
    with pytest.raises(ValueError, match=r"lr: 0\.01 saved, 0\.02 now"): make(tmp_path, steps=2, lr=2e-2, resume=True)
    t = make(tmp_path, steps=3, lr=2e-2, save_every=0, overwrite=True)
    assert not (tmp_path / 'log.jsonl').exists() and not (tmp_path / 'final').exists()
    t.train()
    assert [r['step'] for r in log_of(tmp_path)] == [1, 2, 3]
    assert json.loads((tmp_path / 'config.json').read_text())['lr'] == 2e-2
    assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == ['step-3']

def test_resume_of_a_run_saved_before_a_field_existed(tmp_path):
    "A config.json without a field added later (e.g. min_lr_rate) resumes when the field has its default."
    make(tmp_path, steps=2, save_every=0).train()
    saved = json.loads((tmp_path / 'config.json').read_text())
    for k in ('min_lr_rate', 'is_correction', 'micro_batch_tokens'): del saved[k]
    (tmp_path / 'config.json').write_text(json.dumps(saved))
    assert make(tmp_path, steps=2, save_every=0, resume=True).state.step == 2
    with pytest.raises(ValueError, match=r"is_cap: 3\.0 saved, 2\.0 now"):
        make(tmp_path, steps=2, save_every=0, resume=True, is_cap=2.0)

def test_negative_max_grad_norm_is_refused():
    for v in (-1, 0):
        with pytest.raises(ValueError, match='max_grad_norm must be a finite number > 0'): RFTConfig(max_grad_norm=v)

def test_reward_function_errors_and_numeric_types(tmp_path):
    def broken_reward(prompts, completions, **_): raise KeyError('answer')
    t = make(tmp_path / 'a'); t.reward_fn = broken_reward
    with pytest.raises(RuntimeError, match=r"reward function .*broken_reward raised KeyError: 'answer' \(step 1, scoring 8 "
                                           r"completions of dataset rows \[\d, \d\]\)"):
        t.train_step()
    import numpy as np
    want = make(tmp_path / 'b', steps=1, save_every=0).train_step()['reward_mean']   # the plain list of floats
    for conv in (np.array, lambda x: np.array(x, dtype=np.float64), torch.tensor, lambda x: [np.float64(v) for v in x]):
        t = make(tmp_path / 'b', steps=1, save_every=0, overwrite=True)
        t.reward_fn = lambda p, c, conv=conv, **k: conv(reward(p, c, **k))
        assert t.train_step()['reward_mean'] == want      # same samples (same seed), same rewards, any container

def test_dataset_row_without_prompt_names_the_row(tmp_path):
    with pytest.raises(ValueError, match="dataset row 3 has no 'prompt' field"):
        RFTTrainer(tiny_model(TOK, hidden=32, layers=1, heads=2), TOK, DATA[:3] + [dict(question='x')], reward,
                   RFTConfig(reg=NoKL(), output_dir=str(tmp_path), progress=False))

def test_trainers_with_different_precisions_in_one_process(tmp_path):
    "Regression: a bf16 trainer followed by an fp32 one failed ('AcceleratorState has already been initialized')."
    for i, bf16 in enumerate((True, False, True)):
        t = make(tmp_path / str(i), steps=1, save_every=0, bf16=bf16)
        assert t.accelerator.mixed_precision == ('bf16' if bf16 else 'no')
        assert t.train_step()['step'] == 1
