"""Paired (arm - its base) differences per seed, mean and 95% t-interval, for one world/reg/lr/steps."""
import json, sys, math
from collections import defaultdict
T = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 10: 2.228}
M = ['accuracy', 'greedy_accuracy', 'sample_accuracy', 'hallucination_rate', 'ece']
f, reg, lr, steps = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
rows = [json.loads(l) for l in open(f)]
base = {r['base_seed']: r for r in rows if r['kind'] == 'base'}
arms = {(r['base_seed'], r['seed']): r for r in rows if r['kind'] in ('arm', 'ckpt') and r['reg'] == reg and abs(r['lr'] - lr) < 1e-12 and r['steps'] == steps}
print(f'{f} reg={reg} lr={lr} steps={steps}: pairs {sorted(arms)}')
for m in M:
    d = [a[m] - base[b][m] for (b, s), a in sorted(arms.items())]
    n = len(d); mu = sum(d) / n
    h = T.get(n - 1, 2.0) * math.sqrt(sum((x - mu) ** 2 for x in d) / (n - 1)) / math.sqrt(n) if n > 1 else float('nan')
    print(f'  {m:20s} diffs {[round(x, 3) for x in d]}  mean {mu:+.3f} ± {h:.3f}')
