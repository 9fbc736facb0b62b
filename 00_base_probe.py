"""Step 0 - base probe: train on alignment-faking-training only.

    python 00_base_probe.py [--demo | --cache-dir DIR] [--layer 40] [-C 10] [--seed 42] ...

Question: does a probe trained on one distribution generalize out of distribution at all?
Read: gold_106 AUROC is the in-distribution ceiling; detection rates on sycophant and
model_organism near 0 and a benchmark AUROC near 0.5 mean the probe does not transfer.
Writes step_0_*.json / step_0_scores.npz / step_0_probe.pkl to the results folder.
"""
if __name__ == "__main__":      # first: Ctrl-C during the imports below is one line, exit 130
    from sweeplib import interrupt
    interrupt.install()
import sys  # noqa: E402
from sweeplib import runner  # noqa: E402


if __name__ == "__main__":
    sys.exit(runner.main_step(0))
