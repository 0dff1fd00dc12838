while kill -0 23485 2>/dev/null; do sleep 2; done
/work/main/.venv/bin/python pilot.py --name W5 --base-seeds 1 --seeds 1 --lrs 2e-4 --eval-at 600,1200 --rl '{"steps":1800}' --world '{"shortcut_frac":0.45,"guess_frac":0.25,"noise_frac":0.0,"hedge_frac":0.08}'
/work/main/.venv/bin/python pilot.py --name W5 --base-seeds 2 --seeds 2 --lrs 2e-4 --eval-at 600,1200 --rl '{"steps":1800}' --world '{"shortcut_frac":0.45,"guess_frac":0.25,"noise_frac":0.0,"hedge_frac":0.08}'
/work/main/.venv/bin/python pilot.py --name W5 --base-seeds 0 --seeds 0 --lrs 2e-4 --regs rkl:0.04,srkl:0.04:0.8 --eval-at 600,1200 --rl '{"steps":1800}' --world '{"shortcut_frac":0.45,"guess_frac":0.25,"noise_frac":0.0,"hedge_frac":0.08}'
/work/main/.venv/bin/python pilot.py --name W5 --base-seeds 0 --seeds 0 --lrs 1e-4 --eval-at 600,1200 --rl '{"steps":1800}' --world '{"shortcut_frac":0.45,"guess_frac":0.25,"noise_frac":0.0,"hedge_frac":0.08}'
/work/main/.venv/bin/python pilot.py --name W5 --base-seeds 0 --seeds 0 --lrs 5e-4 --eval-at 600,1200 --rl '{"steps":1200}' --world '{"shortcut_frac":0.45,"guess_frac":0.25,"noise_frac":0.0,"hedge_frac":0.08}'
