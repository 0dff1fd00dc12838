export OMP_NUM_THREADS=1 PYTHONPATH=/tmp/pilot
P=/work/main/.venv/bin/python
$P pilot.py --name W6 --base-seeds 0 --seeds 0 --lrs 3e-4 --eval-at 300,600,900 --rl '{"steps":1200}' --world '{"shortcut_frac":0.45,"guess_frac":0.25,"noise_frac":0.0,"hedge_frac":0.08,"max_steps":4}'
$P pilot.py --name W6 --base-seeds 1 --seeds 1 --lrs 3e-4 --eval-at 300,600,900 --rl '{"steps":1200}' --world '{"shortcut_frac":0.45,"guess_frac":0.25,"noise_frac":0.0,"hedge_frac":0.08,"max_steps":4}'
$P pilot.py --name W6NS --base-seeds 1 --seeds 1 --lrs 2e-4 --eval-at 300,600,900 --rl '{"steps":1200}' --world '{"shortcut_frac":0.0,"guess_frac":0.25,"noise_frac":0.0,"hedge_frac":0.08,"max_steps":4}'
