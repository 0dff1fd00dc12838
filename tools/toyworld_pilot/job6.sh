while kill -0 25016 2>/dev/null; do sleep 2; done
/work/main/.venv/bin/python pilot.py --name W0 --base-seeds 0 --seeds 0 --lrs 2e-4 --eval-at 600,1200 --rl '{"steps":1800}'
