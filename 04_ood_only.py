"""Step 4 (control) - OOD only: train on the training parts of sycophant + model_organism +
benchmark, without alignment-faking-training.

    python 04_ood_only.py [--demo | --cache-dir DIR] [--layer 40] [-C 10] [--seed 42] ...

Question: how far do the OOD sources alone get, in and out of distribution?
Read: compare with step 3 in the comparison (shown as step 4): a gold_106 collapse means the
training-format data carries the in-distribution signal; matching OOD numbers mean
alignment-faking-training adds nothing out of distribution.
Writes step_4_ood_only.json / step_4_scores.npz / step_4_probe.pkl to the results folder.
"""
if __name__ == "__main__":      # first: Ctrl-C during the imports below is one line, exit 130
    from sweeplib import interrupt
    interrupt.install()
import sys  # noqa: E402
from sweeplib import runner  # noqa: E402


if __name__ == "__main__":
    sys.exit(runner.main_step(4))
