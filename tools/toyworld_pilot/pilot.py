"""Pilot driver: base diagnostics and RL arms with full metrics, one process, one thread. Appends JSON lines."""
import argparse, copy, json, time, sys
from pathlib import Path
import torch
from carerft import toyworld as tw
from carerft.compare import RL_DEFAULTS, EVAL_DEFAULTS
from carerft.algos import make_algo
from carerft.divergences import make_reg
from carerft.trainer import RFTConfig, RFTTrainer
from transformers.utils import logging as hf_logging
hf_logging.disable_progress_bar(); hf_logging.set_verbosity_error()
torch.set_num_threads(1)

ap = argparse.ArgumentParser()
ap.add_argument('--name', required=True)
ap.add_argument('--world', default='{}')
ap.add_argument('--rl', default='{}')
ap.add_argument('--base-seeds', default='0')
ap.add_argument('--seeds', default='0')
ap.add_argument('--lrs', default='')
ap.add_argument('--regs', default='none')  # none, rkl:0.04, srkl:0.04:0.8
ap.add_argument('--base-only', action='store_true')
ap.add_argument('--eval-at', default='')
a = ap.parse_args()
world = tw.ToyWorldConfig(**json.loads(a.world))
rl_over = json.loads(a.rl)
out = Path('/tmp/pilot/res'); log = out / f'{a.name}.jsonl'

def full(model, tok, base_seed):
    ev = tw.evaluate_world(model, tok, world, seed=10_000 + base_seed, **EVAL_DEFAULTS)
    recs = ev.pop('records'); n = EVAL_DEFAULTS['n_questions']; ans = recs[:n]
    m = {k: float(v) for k, v in ev.items()}
    m['pass_at_n'] = sum(r['answer'] in r['samples'] for r in ans) / n
    by = {}
    for r in ans:
        k = (len(r['prompt']) - 2) // 2; by.setdefault(k, []).append(r)
    m['acc_by_len'] = {k: round(sum(r['correct'] for r in v) / len(v), 3) for k, v in sorted(by.items())}
    m['greedy_by_len'] = {k: round(sum(r['greedy'] == r['answer'] for r in v) / len(v), 3) for k, v in sorted(by.items())}
    if world.shortcut_frac:
        m['majority_is_shortcut'] = sum(r['majority'] == tw.shortcut_answer(r['prompt'], world) != r['answer'] for r in ans) / n
    return m

def emit(d):
    print(json.dumps(d), flush=True)
    with open(log, 'a') as f: f.write(json.dumps(d) + '\n')

for bs in map(int, a.base_seeds.split(',')):
    t0 = time.perf_counter()
    model, tok = tw.train_base(world, seed=bs, cache_dir='/tmp/pilot/cache', progress=False)
    tb = time.perf_counter() - t0
    info = json.loads((tw.base_path(world, bs, '/tmp/pilot/cache') / 'train_info.json').read_text())
    t1 = time.perf_counter(); mb = full(model, tok, bs)
    emit(dict(name=a.name, kind='base', base_seed=bs, world=json.loads(a.world), base_train_s=round(info['train_seconds'], 1),
              eval_s=round(time.perf_counter() - t1, 1), sha=info['sha256'][:12], **mb))
    if a.base_only:
        continue
    for seed in map(int, a.seeds.split(',')):
        for lr in [float(x) for x in a.lrs.split(',')] if a.lrs else [None]:
            for regspec in a.regs.split(','):
                p = regspec.split(':'); reg = p[0]; beta = float(p[1]) if len(p) > 1 else 0.0; alpha = float(p[2]) if len(p) > 2 else 0.8
                rl = RL_DEFAULTS | rl_over | ({} if lr is None else dict(lr=lr))
                rl['save_every'] = 0
                m0, tok = tw.train_base(world, seed=bs, cache_dir='/tmp/pilot/cache', progress=False)
                ref = copy.deepcopy(m0)
                rows = tw.make_questions(rl['steps'] * rl['prompts_per_step'], seed, 'answerable', world, 'train')
                folder = Path(f'/tmp/pilot/runs/{a.name}-{reg}-{beta}-b{bs}-s{seed}-lr{rl["lr"]}')
                cfg = RFTConfig(algo=make_algo('grpo'), reg=make_reg(reg, beta, alpha), seed=seed, output_dir=str(folder),
                                progress=False, overwrite=True, **rl)
                t0 = time.perf_counter()
                trn = RFTTrainer(m0, tok, rows, tw.reward, cfg, ref_model=ref)
                at = {int(x) for x in a.eval_at.split(',') if x}
                def cb(tr, row, bs=bs, seed=seed, reg=reg, beta=beta, lr=rl['lr']):
                    if tr.state.step in at:
                        mdl = tr.accelerator.unwrap_model(tr.model) if hasattr(tr, 'accelerator') else tr.model
                        was = mdl.training; mdl.eval()
                        with torch.random.fork_rng():
                            emit(dict(name=a.name, kind='ckpt', reg=reg, beta=beta, base_seed=bs, seed=seed, lr=lr, steps=tr.state.step, **full(mdl, tok, bs)))
                        mdl.train(was)
                trn.callbacks.append(cb)
                m = trn.train()
                tr = time.perf_counter() - t0
                logrows = [json.loads(l) for l in (folder / 'log.jsonl').read_text().splitlines()] if (folder / 'log.jsonl').exists() else []
                rew = [r.get('reward_mean') for r in logrows]
                curve = [round(sum(rew[i:i+100]) / len(rew[i:i+100]), 3) for i in range(0, len(rew), 100)] if rew else []
                emit(dict(name=a.name, kind='arm', reg=reg, beta=beta, alpha=alpha if reg == 'srkl' else None, base_seed=bs, seed=seed,
                          lr=rl['lr'], steps=rl['steps'], rl=rl_over, train_s=round(tr, 1), reward_by_100=curve, **full(m, tok, bs)))
