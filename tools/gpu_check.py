"""A GPU check that travels: matmul ceiling, sampler decode speed, full versus chunked log-probs and three real
`RFTTrainer.train_step`s on a randomly initialised model of a registered shape (no hub, no datasets).

    PYTHONPATH=. python tools/gpu_check.py --shape qwen2.5-math-1.5b --out runs/gpu_check

DIR/gpu_check.json is rewritten after every measurement, so a run cut short still returns what it measured. A
section that raises records its error and the check goes on to the next one (the exit status is then 1).
Imports only torch, transformers, accelerate and carerft modules that import nothing else (no datasets, math-verify,
trl). On CPU (`--shape tiny` in CI) the same code runs at toy sizes and memory is not measured (time only).
"""

import argparse
import copy
import gc
import json
import os
import platform
import random
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

SECTIONS = ('matmul', 'decode', 'logprobs', 'train')
SIZES = {  # per device kind: big sizes on a GPU, toy sizes on CPU (and for the tiny shape anywhere)
    'gpu': dict(
        matmul_n=8192,
        decode_seqs=(64, 256),
        decode_prompt=64,
        decode_tokens=256,
        lp_seqs=8,
        lp_prompt=128,
        lp_tokens=1024,
        lp_chunk=1024,
        group_size=12,
        prompts=4,
        prompt_len=512,
        new_tokens=1024,
        grad_accum=8,
    ),
    'toy': dict(
        matmul_n=256,
        decode_seqs=(4, 8),
        decode_prompt=8,
        decode_tokens=8,
        lp_seqs=2,
        lp_prompt=8,
        lp_tokens=32,
        lp_chunk=16,
        group_size=4,
        prompts=2,
        prompt_len=12,
        new_tokens=12,
        grad_accum=1,
    ),
}
CHARS = [chr(c) for c in range(0x20, 0x7F)]  # the local tokenizer: printable ASCII, one token per character


class Report:
    "The JSON record, rewritten atomically after every measurement."

    def __init__(self, path: Path, meta: dict):
        self.path, self.data = path, dict(meta, sections={}, complete=False)
        self.write()

    def put(self, section: str, value):
        self.data['sections'][section] = value
        self.write()

    def write(self):
        tmp = self.path.with_name(self.path.name + '.tmp')
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)


def commit() -> str | None:
    "The git commit of the working tree (with '+dirty' when it has changes), None outside a git checkout."
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(['git', 'status', '--porcelain'], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode:
        return os.environ.get('CARERFT_COMMIT')  # a copy of the tree without .git: the launcher may pass it
    return head.stdout.strip() + ('+dirty' if dirty.stdout.strip() else '')


def environment(device: torch.device, shape: str) -> dict:
    "Versions, device name and commit."
    import accelerate
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'
    return dict(
        shape=shape,
        device=str(device),
        device_name=name,
        python=platform.python_version(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        accelerate=accelerate.__version__,
        cuda=torch.version.cuda,
        commit=commit(),
        started=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
    )


def sync(device: torch.device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> float:
    "Free cached memory, reset the peak counter; returns the bytes allocated now (0 on CPU)."
    gc.collect()
    if device.type != 'cuda':
        return 0.0
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return float(torch.cuda.memory_allocated(device))


def peak_gib(device: torch.device) -> float | None:
    "Peak allocated GiB since the last reset (None on CPU: not measured)."
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda' else None


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def timed(f, device: torch.device) -> tuple:
    "(seconds, result) of f(), synchronised."
    sync(device)
    t0 = time.perf_counter()
    out = f()
    sync(device)
    return time.perf_counter() - t0, out


# ---------------------------------------------------------------- sections
def check_matmul(device: torch.device, size: dict) -> dict:
    "The bf16 matmul ceiling: the best of 10 products of two (n, n) bf16 matrices, in FLOP/s."
    n = size['matmul_n']
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    a @ b  # warm-up
    secs = min(timed(lambda: a @ b, device)[0] for _ in range(10))
    return dict(n=n, dtype='bfloat16', seconds=secs, flops=2 * n**3 / secs, tflops=2 * n**3 / secs / 1e12)


def random_prompts(n: int, length: int, seed: int) -> list[str]:
    "n prompts of `length` random printable characters (one token each)."
    rng = random.Random(seed)
    return [''.join(rng.choice(CHARS[1:]) for _ in range(length)) for _ in range(n)]


def check_decode(model, tok, device: torch.device, size: dict, bf16: bool) -> dict:
    "Decoded tokens/s of the sampler (EOS suppressed: every row runs the full length), per number of sequences."
    from carerft.rollout import encode_prompts, sample_ids

    out, T = {}, size['decode_tokens']
    variants = [('fp32 weights, bf16 autocast' if bf16 else 'fp32', model, bf16)]
    if bf16:
        variants.append(('bf16 weights', copy.deepcopy(model).to(torch.bfloat16), False))
    for label, m, amp in variants:
        for n in size['decode_seqs']:
            ids, mask = encode_prompts(tok, random_prompts(n, size['decode_prompt'], n), tok.pad_token_id)
            g = torch.Generator(device).manual_seed(0)
            start = reset_peak(device)
            with autocast(device, amp):
                secs, (comp, _) = timed(
                    lambda: sample_ids(m, ids, mask, 1, T, [tok.eos_token_id], 0, 1.0, g, True), device
                )
            out[f'{label} @ {n}'] = dict(
                sequences=n,
                prompt_tokens=size['decode_prompt'],
                new_tokens=comp.shape[1],
                seconds=secs,
                tokens_per_s=n * comp.shape[1] / secs,
                peak_gib=peak_gib(device),
                start_gib=start / 2**30,
            )
    return out


def check_logprobs(model, tok, device: torch.device, size: dict, bf16: bool) -> dict:
    "Forward + backward of token_logprobs with full logits and with the chunked head: seconds and peak memory."
    from carerft.rollout import token_logprobs

    n, P, T = size['lp_seqs'], size['lp_prompt'], size['lp_tokens']
    g = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(4, len(tok), (n, P), generator=g).to(device)
    comp = torch.randint(0, model.config.vocab_size, (n, T), generator=g).to(device)
    ones = torch.ones(n, P, dtype=torch.long, device=device), torch.ones(n, T, device=device)
    out = dict(sequences=n, prompt_tokens=P, completion_tokens=T, vocab=model.config.vocab_size)
    out['memory'] = 'torch.cuda.max_memory_allocated' if device.type == 'cuda' else 'not measured on CPU: time only'
    for ckpt in (False, True):
        if ckpt:  # transformers >= 5.x calls it activation checkpointing
            (getattr(model, 'activation_checkpointing_enable', None) or model.gradient_checkpointing_enable)()
        for label, chunk in (('full', None), ('chunked', size['lp_chunk'])):
            start = reset_peak(device)

            def step():
                with autocast(device, bf16):
                    logp, ent = token_logprobs(model, prompt_ids, ones[0], comp, ones[1], 1.0, True, chunk_size=chunk)
                (logp.sum() + ent.sum()).backward()
                return logp.detach().sum().item()

            model.train()
            secs, total = timed(step, device)
            model.zero_grad(set_to_none=True)
            peak = peak_gib(device)
            key = f"{label}{', gradient checkpointing' if ckpt else ''}"
            out[key] = dict(
                seconds=secs,
                logp_sum=total,
                peak_gib=peak,
                peak_above_start_gib=None if peak is None else peak - start / 2**30,
                chunk_size=chunk,
            )
        if ckpt:
            (getattr(model, 'activation_checkpointing_disable', None) or model.gradient_checkpointing_disable)()
    return out


def model_flops(model, sequences: int, prompt: int, completion: float) -> float:
    "Forward + backward model FLOPs of an update: 3 x [2 n_backbone tokens + 2 d V completion tokens + attention]."
    c = model.config
    d, V, L = c.hidden_size, c.vocab_size, c.num_hidden_layers
    n_backbone = sum(p.numel() for p in model.parameters()) - V * d * (1 if c.tie_word_embeddings else 2)
    tokens = sequences * (prompt + completion)
    attention = sequences * 2 * L * d * (prompt + completion) ** 2  # causal QK^T and AV: 4 L d S^2 / 2 per sequence
    return 3 * (2 * n_backbone * tokens + 2 * d * V * sequences * completion + attention)


def noise_reward(seed: int):
    "Seeded uniform noise as the reward: groups never tie, so every step updates (it measures speed, not learning)."
    rng = random.Random(seed)

    def noise(prompts, completions, **columns):
        return [rng.random() for _ in completions]

    return noise


def check_train(model, tok, device: torch.device, size: dict, bf16: bool, steps: int, out: Path, report, ceiling):
    "`steps` real RFTTrainer.train_steps (GRPO + SRKL, bf16 reference): times, losses, update MFU, peak memory."
    from carerft.trainer import RFTConfig, RFTTrainer

    G, B, P, T = size['group_size'], size['prompts'], size['prompt_len'], size['new_tokens']
    config = RFTConfig(
        group_size=G,
        prompts_per_step=B,
        max_prompt_len=P,
        max_new_tokens=T,
        grad_accum_steps=size['grad_accum'],
        steps=steps,
        lr=1e-6,
        bf16=bf16,
        output_dir=str(out / 'train'),
        overwrite=True,
        save_every=0,
        progress=False,
    )
    ref = copy.deepcopy(model).to(torch.bfloat16 if bf16 else torch.float32).eval()  # a bf16 reference in bf16 runs
    dataset = [dict(prompt=p) for p in random_prompts(B * steps, P, 1)]
    trainer = RFTTrainer(model, tok, dataset, noise_reward(0), config, ref_model=ref)
    rows = []
    result = dict(group_size=G, prompts=B, prompt_tokens=P, max_new_tokens=T, grad_accum_steps=size['grad_accum'])
    for _ in range(steps):
        reset_peak(device)
        row = trainer.train_step()
        flops = model_flops(model, G * B, P, row.get('completion_length', T))
        row |= dict(peak_gib=peak_gib(device), update_flops=flops, update_tflops=flops / row['time_update'] / 1e12)
        row['update_mfu'] = None if ceiling is None else flops / row['time_update'] / ceiling
        rows.append({k: v for k, v in row.items() if isinstance(v, (int, float, str, type(None)))})
        report.put('train', result | dict(steps=rows))
    trainer.end()
    return result | dict(steps=rows)


def summary(sections: dict) -> dict:
    "The issue's goals against what was measured (None where a section is missing or failed)."

    def get(*keys):
        x = sections
        for k in keys:
            x = x.get(k) if isinstance(x, dict) else None
        return x

    decode = [v for v in (get('decode') or {}).values() if isinstance(v, dict) and 'tokens_per_s' in v]
    most = max((v['sequences'] for v in decode), default=None)  # the goal is at the most sequences (256)
    mfu = [r['update_mfu'] for r in get('train', 'steps') or [] if r.get('update_mfu') is not None]
    full, chunked = get('logprobs', 'full', 'peak_above_start_gib'), get('logprobs', 'chunked', 'peak_above_start_gib')
    out = dict(
        decode_sequences=most,
        decode_tokens_per_s_best=max((v['tokens_per_s'] for v in decode if v['sequences'] == most), default=None),
        update_mfu_best=max(mfu, default=None),
        chunked_over_full_peak=None if not (full and chunked) else chunked / full,
    )
    goals = dict(decode_tokens_per_s_best=20_000, update_mfu_best=0.4, chunked_over_full_peak=1 / 3)
    below = ('chunked_over_full_peak',)  # lower is better
    met = {k: None if out[k] is None else (out[k] <= g if k in below else out[k] >= g) for k, g in goals.items()}
    return out | dict(goals=goals, goals_met=met)


# ---------------------------------------------------------------- main
def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--shape', required=True, help='a name in carerft.scale.SHAPES, e.g. tiny, qwen2.5-math-1.5b')
    p.add_argument('--out', required=True, help='folder for gpu_check.json')
    p.add_argument('--steps', type=int, default=3, help='train_steps to run (>= 1)')
    p.add_argument('--sections', default=','.join(SECTIONS), help=f'comma-separated subset of {",".join(SECTIONS)}')
    p.add_argument('--bf16', choices=('auto', 'on', 'off'), default='auto', help='bf16 autocast (auto: on a GPU)')
    p.add_argument('--fail-after', default=None, help='raise after this section (tests the partial JSON)')
    args = p.parse_args(argv)
    args.sections = [s for s in args.sections.split(',') if s]
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        p.error(f"--sections: unknown {bad}, allowed {', '.join(SECTIONS)}")
    if args.steps < 1:
        p.error(f'--steps must be >= 1, got {args.steps}')
    return args


def main(argv=None) -> int:
    args = parse(argv)
    from carerft.scale import SHAPES, build_model
    from carerft.tiny import char_tokenizer

    if args.shape not in SHAPES:
        print(f"--shape must be one of {', '.join(SHAPES)}, got {args.shape!r}", file=sys.stderr)
        return 2
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    size = SIZES['gpu' if device.type == 'cuda' and args.shape != 'tiny' else 'toy']
    bf16 = args.bf16 == 'on' or (args.bf16 == 'auto' and device.type == 'cuda')
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out / 'gpu_check.json', dict(environment(device, args.shape), bf16=bf16, sizes=size))
    tok = char_tokenizer(CHARS)
    t0 = time.perf_counter()
    model = build_model(args.shape, device.type)
    report.put('model', dict(params=sum(p.numel() for p in model.parameters()), build_seconds=time.perf_counter() - t0))
    failed, ceiling = False, None
    for name in args.sections:
        try:
            if name == 'matmul':
                report.put(name, check_matmul(device, size))
                ceiling = report.data['sections'][name]['flops']
            elif name == 'decode':
                report.put(name, check_decode(model, tok, device, size, bf16))
            elif name == 'logprobs':
                report.put(name, check_logprobs(model, tok, device, size, bf16))
            else:
                report.put(name, check_train(model, tok, device, size, bf16, args.steps, out, report, ceiling))
        except Exception as e:  # record it and go on: the other sections still measure
            failed = True
            report.put(name, dict(error=f'{type(e).__name__}: {e}', traceback=traceback.format_exc()[-4000:]))
        if name == args.fail_after:
            raise RuntimeError(f'--fail-after {name}: stopping on purpose')
    report.data['summary'] = summary(report.data['sections'])
    report.data['complete'] = not failed
    report.data['finished'] = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
    report.write()
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
