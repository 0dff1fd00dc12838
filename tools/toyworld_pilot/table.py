"""Markdown tables from res/*.jsonl: one row per base/ckpt/arm, and paired arm - base differences."""
import json, sys, glob, math
M = ['accuracy', 'greedy_accuracy', 'sample_accuracy', 'hallucination_rate', 'unanswerable_sample_abstention', 'abstention_rate', 'ece', 'mean_confidence', 'pass_at_n']
short = dict(accuracy='maj acc', greedy_accuracy='greedy', sample_accuracy='sample', hallucination_rate='halluc',
             unanswerable_sample_abstention='unans idk/sample', abstention_rate='abst(ans)', ece='ECE', mean_confidence='conf', pass_at_n='pass@8')
rows = [json.loads(l) for f in sys.argv[1:] for l in open(f)]
print('| run | kind | reg | base | seed | lr | steps | ' + ' | '.join(short[m] for m in M) + ' | 3-step maj | wall s |')
print('|---' * (len(M) + 9) + '|')
seen = set()
for r in rows:
    key = (r['name'], r['kind'], r.get('reg'), r.get('beta'), r['base_seed'], r.get('seed'), r.get('lr'), r.get('steps'))
    if key in seen: continue
    seen.add(key)
    reg = '' if r['kind'] == 'base' else r['reg'] + (f"({r['beta']:g})" if r['beta'] else '')
    wall = r.get('train_s', r.get('base_train_s', ''))
    print(f"| {r['name']} | {r['kind']} | {reg} | {r['base_seed']} | {r.get('seed', '') if r['kind'] != 'base' else ''} | {r.get('lr', '') or ''} | {r.get('steps', '') or ''} | "
          + ' | '.join(f"{r[m]:.3f}" for m in M) + f" | {r['acc_by_len'].get('3', r['acc_by_len'].get(3))} | {wall} |")
