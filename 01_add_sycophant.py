"""Step 1 - add sycophant: train on alignment-faking-training + sycophant (80 %).

    python 01_add_sycophant.py [--demo | --cache-dir DIR] [--layer 40] [-C 10] [--seed 42] ...

Question: does one extra, all-AF, OOD-format source move OOD performance?
Read: sycophant is all AF, so its held-out detection can rise by learning 'OOD format means AF';
check the benchmark negatives' false positives before calling it generalization.
Writes step_1_*.json / step_1_scores.npz / step_1_probe.pkl to the results folder.
"""
if __name__ == "__main__":      # first: Ctrl-C during the imports below is one line, exit 130
    from sweeplib import interrupt
    interrupt.install()
import sys  # noqa: E402
from sweeplib import runner  # noqa: E402


if __name__ == "__main__":
    sys.exit(runner.main_step(1))
