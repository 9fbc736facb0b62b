"""Step 2 - add model organisms: + model_organism (80 %).

    python 02_add_organisms.py [--demo | --cache-dir DIR] [--layer 40] [-C 10] [--seed 42] ...

Question: do model-organism samples carry signal that transfers to the benchmark?
Read: a benchmark AUROC still near 0.5 means the organisms teach their own distribution only.
Writes step_2_*.json / step_2_scores.npz / step_2_probe.pkl to the results folder.
"""
if __name__ == "__main__":      # first: Ctrl-C during the imports below is one line, exit 130
    from sweeplib import interrupt
    interrupt.install()
import sys  # noqa: E402
from sweeplib import runner  # noqa: E402


if __name__ == "__main__":
    sys.exit(runner.main_step(2))
