"Paper scale: the registered shapes' parameter counts, the memory plan against its arithmetic, and `carerft plan`."
import dataclasses
import inspect
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from carerft.cli import main
from carerft.scale import (GPU_GIB, PRESETS, SHAPES, TERMS, GiB, KiB, RunSize, build_model, count_params,
                           kv_bytes_per_token, plan_memory, run_size, shape_config)
from carerft.rollout import token_logprobs
from carerft.trainer import RFTConfig

BIG = ('qwen2.5-math-1.5b', 'qwen2.5-3b', 'qwen2.5-7b')


def paper(shape, **kw):
    return plan_memory(shape, run_size('care-paper', **kw))


# ---- shapes ----

@pytest.mark.parametrize('shape, published', [('qwen2.5-math-1.5b', '1.544'), ('qwen2.5-3b', '3.086'),
                                               ('qwen2.5-7b', '7.616')])
def test_parameter_counts_match_the_published_ones(shape, published):
    "Counted on the meta device, to the published precision (three decimals of a billion)."
    assert f'{count_params(shape) / 1e9:.3f}' == published


def test_exact_counts_and_tying():
    assert [count_params(s) for s in BIG] == [1_543_714_304, 3_085_938_688, 7_615_616_512]
    m = build_model('qwen2.5-7b')
    assert m.lm_head.weight.is_meta and m.lm_head.weight is not m.model.embed_tokens.weight
    m3 = build_model('qwen2.5-3b')
    assert m3.lm_head.weight is m3.model.embed_tokens.weight   # tied: one tensor, counted once
    c = shape_config('qwen2.5-math-1.5b')
    assert (c.max_position_embeddings, c.tie_word_embeddings, c.vocab_size) == (4096, True, 151_936)


def test_tiny_is_random_and_runs():
    a, b = build_model('tiny', 'cpu', seed=3), build_model('tiny', 'cpu', seed=3)
    assert torch.equal(a.lm_head.weight, b.lm_head.weight) and not a.lm_head.weight.is_meta
    assert not torch.equal(a.lm_head.weight, build_model('tiny', 'cpu', seed=4).lm_head.weight)
    assert a(torch.tensor([[5, 6]])).logits.shape == (1, 2, 151_936)


# ---- the arithmetic of PAPER-SCALE.md ----

def test_state_reference_kv_and_logits_reproduce_the_notes():
    gib = lambda k: [round(paper(s)['terms_gib'][k], 1) for s in BIG]
    states = [round(sum(paper(s)['terms_gib'][k] for k in ('weights', 'gradients', 'optimizer')), 1) for s in BIG]
    assert states == [23.0, 46.0, 113.5]                                # 16 B/param
    assert gib('reference') == [2.9, 5.7, 14.2]                         # bf16 reference
    assert [kv_bytes_per_token(shape_config(s)) / KiB for s in BIG] == [28, 36, 56]
    assert round(1000 * 151_936 * 4 / GiB, 2) == 0.57                  # one fp32 logits copy per 1,000 tokens
    t8 = paper('qwen2.5-7b', optimizer='adamw8bit')['terms_gib']
    assert round(t8['weights'] + t8['gradients'] + t8['optimizer'], 1) == 70.9   # ~10 B/param


def test_plan_terms_are_the_equations():
    "Every term of the 7B care-paper plan recomputed from its equation; phases are sums of their terms; peak the max."
    p = paper('qwen2.5-7b', logprob_chunk=512)
    n, c = p['params'], shape_config('qwen2.5-7b')
    d, I, L, V = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
    N, rows, P, T = 48, 8, 512, 1024
    s = 32 * d + 6 * (4 * 128) + 8 * I
    want = dict(weights=4 * n, gradients=4 * n, optimizer=8 * n, reference=2 * n,
                kv_cache=N * (P + T) * 2 * L * 4 * 128 * 2, ref_forward=rows * (P + T) * s,
                ref_logprob_head=512 * V * 10, autocast_copies=2 * (n - V * d),
                activations=rows * (P + T) * (4 * L * d + 4 * s), logprob_head=512 * V * 20)
    assert set(p['terms_gib']) == set(TERMS) == set(want)
    for k, b in want.items():
        assert math.isclose(p['terms_gib'][k], b / GiB, rel_tol=1e-12), k
    for phase, total in p['phases_gib'].items():
        assert math.isclose(total, sum(g for k, g in p['terms_gib'].items() if phase in TERMS[k][1]))
    assert p['peak_gib'] == max(p['phases_gib'].values()) == p['phases_gib'][p['peak_phase']]
    assert set(p['estimated']) == {'ref_forward', 'ref_logprob_head', 'activations', 'logprob_head'}


def test_chunk_and_reference_and_checkpointing_change_what_they_should():
    full, chunked = paper('qwen2.5-3b', logprob_chunk=None), paper('qwen2.5-3b', logprob_chunk=512)
    assert full['terms_gib']['logprob_head'] / chunked['terms_gib']['logprob_head'] == 8 * 1024 / 512
    assert full['terms_gib']['ref_logprob_head'] / chunked['terms_gib']['ref_logprob_head'] == 8 * 1024 / 512  # a micro-batch
    assert paper('tiny', logprob_chunk=10**6)['terms_gib'] == paper('tiny', logprob_chunk=None)['terms_gib']
    none = paper('qwen2.5-3b', reference='none')['terms_gib']
    assert none['reference'] == none['ref_forward'] == none['ref_logprob_head'] == 0
    assert paper('qwen2.5-3b', gradient_checkpointing=False)['terms_gib']['activations'] > 5 * full['terms_gib']['activations']


@pytest.mark.parametrize('gpu_gib', [GPU_GIB, 139.0])
def test_7b_plain_adamw_does_not_fit_but_8bit_does(gpu_gib):
    "At 141e9 bytes (131.3 GiB) and at the 139 GiB a card holds in practice: the same verdicts."
    v = lambda opt, chunk: plan_memory('qwen2.5-7b', run_size('care-paper', optimizer=opt, logprob_chunk=chunk), gpu_gib)
    assert not v('adamw', None)['fits'] and not v('adamw', 512)['fits']
    assert v('adamw8bit', 512)['fits']
    full = v('adamw8bit', None)                     # full logits: the update's head holds a micro-batch's logits
    assert full['peak_phase'] == 'update' and full['fits'] == (gpu_gib > 138.4)   # 138.4 GiB: fits 139, not 131.3
    assert round(GPU_GIB, 1) == 131.3


def test_smaller_models_fit_at_paper_sizes():
    assert all(paper(s)['fits'] for s in BIG[:2])


def test_runsize_defaults_are_rftconfig_and_token_logprobs_defaults():
    assert RunSize().logprob_chunk == inspect.signature(token_logprobs).parameters['chunk_size'].default == 1024
    cfg = RFTConfig(progress=False)
    for f in dataclasses.fields(RunSize):
        if hasattr(cfg, f.name):
            assert getattr(RunSize(), f.name) == getattr(cfg, f.name), f.name
    assert RunSize.from_config(cfg) == RunSize()
    assert PRESETS['care-paper'].prompts_per_step * PRESETS['care-paper'].group_size == 48


# ---- carerft plan ----

PAPER_7B = ['plan', '--shape', 'qwen2.5-7b', '--preset', 'care-paper']


def test_cli_json_fits(capsys):
    assert main(PAPER_7B + ['--optimizer', 'adamw8bit', '--json']) == 0          # the chunked head by default
    out = json.loads(capsys.readouterr().out)
    assert out['params'] == 7_615_616_512 and out['fits'] is True and 100 < out['peak_gib'] < GPU_GIB
    assert out == json.loads(json.dumps(paper('qwen2.5-7b', optimizer='adamw8bit')))
    assert out['run']['logprob_chunk'] == 1024


def test_cli_full_logits_with_none(capsys):
    "--logprob-chunk none: full logits, and 7B with 8-bit AdamW no longer fits (the update's log-prob head)."
    assert main(PAPER_7B + ['--optimizer', 'adamw8bit', '--logprob-chunk', 'none', '--json']) == 3
    out = json.loads(capsys.readouterr().out)
    assert out['run']['logprob_chunk'] is None and out['peak_phase'] == 'update' and round(out['peak_gib'], 1) == 138.4
    assert round(out['terms_gib']['logprob_head'], 1) == 23.2 and round(out['terms_gib']['ref_logprob_head'], 1) == 11.6


def test_cli_does_not_fit_exits_3_and_says_why(capsys):
    assert main(PAPER_7B + ['--logprob-chunk', '512', '--json']) == 3
    cap = capsys.readouterr()
    out = json.loads(cap.out)                                  # stdout is still the one JSON object
    assert out['fits'] is False and out['peak_gib'] > out['gpu_gib']
    assert cap.err.startswith('carerft plan: does not fit: peak ') and '--gpu-gib 131.3' in cap.err
    assert 'optimizer state 56.7 GiB (--optimizer adamw8bit)' in cap.err and len(cap.err.splitlines()) == 1


def test_cli_table_for_the_three_shapes(capsys):
    for shape in BIG[:2]:
        assert main(['plan', '--shape', shape, '--preset', 'care-paper']) == 0
        text = capsys.readouterr().out
        assert text.startswith(f'{shape}: ') and ': fits' in text and 'KV cache of the rollout' in text
    assert main(PAPER_7B) == 3
    assert ': does not fit' in capsys.readouterr().out


def test_cli_flags_override_the_preset(capsys):
    assert main(PAPER_7B + ['--optimizer', 'adamw8bit', '--group-size', '4', '--no-gradient-checkpointing',
                            '--grad-accum-steps', '16', '--gpu-gib', '200', '--json']) == 0
    run = json.loads(capsys.readouterr().out)['run']
    assert (run['group_size'], run['prompts_per_step'], run['gradient_checkpointing'], run['grad_accum_steps']) == \
        (4, 4, False, 16)
    assert main(['plan', '--shape', 'tiny', '--json']) == 0                 # no preset: RFTConfig's sizes
    assert json.loads(capsys.readouterr().out)['run'] == dataclasses.asdict(RunSize())


@pytest.mark.parametrize('argv, msg', [
    (['--shape', 'qwen2.5-14b'], f"--shape must be one of {', '.join(SHAPES)}, got 'qwen2.5-14b'"),
    (['--shape', 'tiny', '--preset', 'dapo'], "--preset must be one of care-paper, got 'dapo'"),
    (['--shape', 'tiny', '--gpu-gib', 'nan'], '--gpu-gib must be a finite number > 0, got nan'),
    (['--shape', 'tiny', '--gpu-gib', '0'], '--gpu-gib must be a finite number > 0, got 0.0'),
    (['--shape', 'tiny', '--group-size', '0'], '--group-size must be an int >= 1, got 0'),
    (['--shape', 'tiny', '--max-new-tokens', '-5'], '--max-new-tokens must be an int >= 1, got -5'),
    (['--shape', 'tiny', '--logprob-chunk', '0'], '--logprob-chunk must be an int >= 1, got 0'),
    (['--shape', 'tiny', '--grad-accum-steps', '3'], '--grad-accum-steps must divide prompts_per_step * group_size = 64'),
    (['--shape', 'tiny', '--optimizer', 'adam'], "--optimizer must be one of adamw, adamw8bit, got 'adam'"),
    (['--shape', 'tiny', '--reference', 'fp16'], "--reference must be one of bf16, fp32, none, got 'fp16'"),
    (['--shape', 'qwen2.5-math-1.5b', '--preset', 'care-paper', '--max-new-tokens', '4000'],
     '--max-new-tokens too long: max_prompt_len + max_new_tokens = 4512 exceeds the 4096-token context'),
])
def test_bad_input_names_the_flag(capsys, argv, msg):
    assert main(['plan', *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'carerft plan: error: {msg}'), err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize('argv', [['plan'], ['plan', '--shape', 'tiny', '--group-size', 'x']])
def test_malformed_command_line_is_argparse_usage(capsys, argv):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and 'usage: carerft plan' in capsys.readouterr().err


def test_console_script_exit_code():
    "The shell sees 3 for a plan that does not fit and 0 for one that does."
    exe = shutil.which('carerft') or str(Path(sys.executable).parent / 'carerft')
    no = subprocess.run([exe, *PAPER_7B], capture_output=True, text=True)
    yes = subprocess.run([exe, *PAPER_7B, '--optimizer', 'adamw8bit', '--json'], capture_output=True, text=True)
    assert (no.returncode, yes.returncode) == (3, 0), no.stderr + yes.stderr
    assert 'does not fit' in no.stdout and json.loads(yes.stdout)['fits'] is True


# ---- training presets: each runs 2 steps on CPU with a tiny stand-in model and a few MATH-like rows ----

from carerft.loading import load_math
from carerft.scale import PAPER_ALGOS, TRAIN_PRESETS, train_preset
from carerft.tiny import char_tokenizer, tiny_model
from carerft.trainer import RFTTrainer

TINY_SIZES = dict(group_size=2, prompts_per_step=2, max_prompt_len=720, max_new_tokens=4, steps=2, grad_accum_steps=1,
                  save_every=0, progress=False)


@pytest.fixture(scope='module')
def tiny_math(tmp_path_factory):
    "A tiny model whose vocabulary covers the paper's prompt, and a JSONL of four MATH-like problems."
    d = tmp_path_factory.mktemp('tiny_math')
    tok = char_tokenizer([chr(i) for i in range(32, 127)] + ['\n'])
    tiny_model(tok, hidden=32, layers=1, heads=2, max_positions=1024).save_pretrained(d / 'model')
    tok.save_pretrained(d / 'model')
    rows = [dict(problem=f'What is {a} + {a}?', level='Level 1', type='Prealgebra', solution=f'$\\boxed{{{2 * a}}}$')
            for a in range(4)]
    (d / 'math.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    return d


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / 'log.jsonl').read_text().splitlines()]


@pytest.mark.parametrize('preset', list(TRAIN_PRESETS))
def test_every_training_preset_runs_two_steps_from_python(preset, tiny_math, tmp_path):
    "train_preset's configuration and rewards, as they are but for the sizes: 2 log rows with each reward's mean."
    from carerft.loading import load_model, load_tokenizer
    config, rewards = train_preset(preset, 'grpo', 'srkl', output_dir=str(tmp_path / 'run'), **TINY_SIZES)
    assert config.bf16 and config.gradient_checkpointing and config.reward_weights == [1.0, 1.0]
    model, tok = load_model(str(tiny_math / 'model')), load_tokenizer(str(tiny_math / 'model'))
    ref = load_model(str(tiny_math / 'model'))
    RFTTrainer(model, tok, load_math(str(tiny_math / 'math.jsonl')), rewards, config, ref_model=ref).train()
    log = read_log(tmp_path / 'run')
    assert len(log) == 2 and all({'reward_math_reward', 'reward_format_reward', 'srkl'} <= set(r) for r in log)
    assert all(r['reward_mean'] == pytest.approx(r['reward_math_reward'] + r['reward_format_reward']) for r in log)


@pytest.mark.parametrize('algo, reg', [('grpo', 'none'), ('dapo', 'rkl'), ('gspo', 'srkl')])
def test_carerft_train_preset_runs_each_algorithm(algo, reg, tiny_math, tmp_path, capsys):
    out = tmp_path / 'run'
    sizes = [a for k, v in TINY_SIZES.items() if k != 'progress' for a in ('--' + k.replace('_', '-'), str(v))]
    code = main(['train', '--preset', 'care-paper', '--algo', algo, '--reg', reg, '--model', str(tiny_math / 'model'),
                 '--data', str(tiny_math / 'math.jsonl'), '--no-progress', '--output-dir', str(out), *sizes])
    assert code == 0, capsys.readouterr().err
    log = read_log(out)
    scored = [r for r in log if r.get('groups_kept', 1) > 0]     # DAPO logs a step whose groups all tied without them
    assert len(log) == 2 and log[0] in scored
    assert all({'reward_math_reward', 'reward_format_reward'} <= set(r) for r in scored)
    cfg = json.loads((out / 'config.json').read_text())
    assert (cfg['steps'], cfg['lr_schedule'], cfg['min_lr_rate'], cfg['temperature']) == (2, 'cosine_with_min_lr', 0.1, 0.7)
    assert cfg['algo'] == repr(PAPER_ALGOS[algo]()) and cfg['reg'].startswith({'none': 'NoKL', 'rkl': 'RKL',
                                                                                 'srkl': 'SRKL'}[reg])


def test_token_budgets_in_the_plan():
    "micro_batch_tokens and rollout_batch_tokens (RFTConfig fields) bound the per-micro-batch and KV-cache terms."
    from carerft.scale import batch_tokens, RunSize
    from carerft.trainer import RFTConfig
    cfg = RFTConfig(group_size=12, prompts_per_step=4, max_prompt_len=512, max_new_tokens=1024, micro_batch_tokens=4096,
                    rollout_batch_tokens=40_000, progress=False)
    run = RunSize.from_config(cfg)
    assert (run.micro_batch_tokens, run.rollout_batch_tokens) == (4096, 40_000)
    assert batch_tokens(run) == (2 * 12 * 1536, 4096)                 # two groups of 12 per sub-batch; the budget
    small = paper('qwen2.5-math-1.5b', grad_accum_steps=1, micro_batch_tokens=4096, rollout_batch_tokens=40_000)
    big = paper('qwen2.5-math-1.5b')
    for k in ('kv_cache', 'activations', 'ref_forward'):   # the chunked head is one chunk either way
        assert small['terms_gib'][k] < big['terms_gib'][k], k
    assert batch_tokens(RunSize(max_prompt_len=512, max_new_tokens=1024, micro_batch_tokens=100))[1] == 1536  # one row
    with pytest.raises(ValueError, match='micro_batch_tokens must be an int >= 1, got 0'): RunSize(micro_batch_tokens=0)


def test_cli_token_budgets(capsys):
    "--micro-batch-tokens replaces the preset's micro-batch count; --rollout-batch-tokens bounds the KV cache."
    assert main(PAPER_7B + ['--optimizer', 'adamw8bit', '--json']) == 0
    counted = json.loads(capsys.readouterr().out)
    assert main(PAPER_7B + ['--optimizer', 'adamw8bit', '--micro-batch-tokens', '8192', '--rollout-batch-tokens',
                            '40000', '--json']) == 0
    budget = json.loads(capsys.readouterr().out)
    assert (budget['run']['micro_batch_tokens'], budget['run']['grad_accum_steps']) == (8192, 1)
    assert budget['terms_gib']['activations'] < counted['terms_gib']['activations']     # 8,192 < 8 x 1,536 tokens
    assert budget['terms_gib']['kv_cache'] < counted['terms_gib']['kv_cache']
    assert main(PAPER_7B + ['--micro-batch-tokens', '8192', '--grad-accum-steps', '6']) == 2
    assert '--micro-batch-tokens cannot be combined with grad_accum_steps > 1' in capsys.readouterr().err
