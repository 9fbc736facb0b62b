"""Step 3 - add benchmark: + benchmark (80 %, with its hard negatives).

    python 03_add_benchmark.py [--demo | --cache-dir DIR] [--layer 40] [-C 10] [--seed 42] ...

Question: with OOD negatives in the mix, does the benchmark recover and does gold_106 hold?
Read: a benchmark gain with a steady gold_106 says the OOD failure was a data problem;
a gold_106 drop says diversity trades off against in-distribution performance.
Writes step_3_*.json / step_3_scores.npz / step_3_probe.pkl to the results folder.
"""
if __name__ == "__main__":      # first: Ctrl-C during the imports below is one line, exit 130
    from sweeplib import interrupt
    interrupt.install()
import sys  # noqa: E402
from sweeplib import runner  # noqa: E402


if __name__ == "__main__":
    sys.exit(runner.main_step(3))
