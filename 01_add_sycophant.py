"""Step 1 - add sycophant: train on alignment-faking-training + sycophant (80 %).

    python 01_add_sycophant.py [--demo | --cache-dir DIR] [--layer 40] [-C 10] [--seed 42] ...

Question: does one extra, all-AF, OOD-format source move OOD performance?
Read: sycophant is all AF, so its held-out detection can rise by learning 'OOD format means AF';
check the benchmark negatives' false positives before calling it generalization.
Writes step_1_*.json / step_1_scores.npz / step_1_probe.pkl to the results folder.
"""
import sys
from sweeplib import pipeline


if __name__ == "__main__":
    sys.exit(pipeline.main_step(1))
