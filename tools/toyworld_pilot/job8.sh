while kill -0 701 2>/dev/null; do sleep 2; done
/work/main/.venv/bin/python pilot.py --name W6 --base-seeds 1 --seeds 1 --lrs 2e-4 --eval-at 600,1200 --rl '{"steps":1800}' --world '{"shortcut_frac":0.45,"guess_frac":0.25,"noise_frac":0.0,"hedge_frac":0.08,"max_steps":4}'
