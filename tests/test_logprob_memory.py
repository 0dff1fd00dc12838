"""Peak memory of `token_logprobs` at a real vocabulary (V = 151,936): the chunked LM head against the full logits.

Each path runs in a fresh CPU process (peak RSS, `ru_maxrss`, only ever grows, so the two must not share one): a Qwen2
with hidden size 64, 4 completions of 256 tokens after a 16-token prompt (N*T = 1,024 positions, so 256-position chunks
make four), forward + backward of the log-prob sum at tau = 0.7. One float32 (N*T, V) copy of the logits is 0.58 GiB.
Run this file as a script to print the numbers quoted in nbs/04_rollout.ipynb:

    python tests/test_logprob_memory.py
"""
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N, P, T, V = 4, 16, 256, 151_936
CHUNK = 256

CHILD = '''
import json, resource, sys, torch
from transformers import Qwen2Config, Qwen2ForCausalLM
from carerft.rollout import token_logprobs

def rss_gib(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30   # Linux: KiB

N, P, T, V, chunk = {N}, {P}, {T}, {V}, json.loads(sys.argv[1])
torch.manual_seed(0)
cfg = Qwen2Config(vocab_size=V, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, max_position_embeddings=512, tie_word_embeddings=True)
model = Qwen2ForCausalLM(cfg).train()
g = torch.Generator().manual_seed(0)
prompt, completion = torch.randint(0, V, (N, P), generator=g), torch.randint(0, V, (N, T), generator=g)
base = rss_gib()                                      # interpreter, torch, transformers and the model's weights
logp = token_logprobs(model, prompt, torch.ones(N, P, dtype=torch.long), completion, torch.ones(N, T), 0.7,
                      chunk_size=chunk)
logp.sum().backward()
grad = model.model.embed_tokens.weight.grad           # the tied embedding / LM head weight
print(json.dumps(dict(peak=rss_gib(), base=base, logp_sum=logp.sum().item(), grad_norm=grad.norm().item())))
'''.format(N=N, P=P, T=T, V=V)


def measure(chunk_size):
    "Peak RSS (GiB), RSS before the pass, log-prob sum and head-gradient norm of one fresh process."
    env = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='2')
    r = subprocess.run([sys.executable, '-c', CHILD, json.dumps(chunk_size)], capture_output=True, text=True, cwd=ROOT,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_chunked_head_lowers_peak_memory():
    full, chunked = measure(None), measure(CHUNK)      # the full (N, T, V) logits, and the head over 4 chunks
    assert abs(chunked['logp_sum'] - full['logp_sum']) <= 1e-6 * abs(full['logp_sum']), (full, chunked)
    assert abs(chunked['grad_norm'] - full['grad_norm']) <= 1e-5 * full['grad_norm'], (full, chunked)
    assert chunked['peak'] < 0.6 * full['peak'], (full, chunked)
    # the pass alone (peak over the process's state before it): the full path holds several (N*T, V) float32 copies at
    # once, the chunked one several (CHUNK, V) copies, a quarter of the size
    copy = N * T * V * 4 / 2**30
    assert full['peak'] - full['base'] > 3 * copy, full
    assert chunked['peak'] - chunked['base'] < (full['peak'] - full['base']) / 3, (full, chunked)


if __name__ == '__main__':
    for name, cs in (('full logits (chunk_size=None)', None), (f'chunked (chunk_size={CHUNK})', CHUNK)):
        m = measure(cs)
        print(f"{name:32s} peak {m['peak']:.2f} GiB (before the pass {m['base']:.2f} GiB), "
              f"log-prob sum {m['logp_sum']:.4f}, head grad norm {m['grad_norm']:.6f}")
