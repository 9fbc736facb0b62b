"""Uncertainty at the pipeline level: per-metric intervals, paired step deltas, repeated
seeds and the leakage audit, checked on real runs of the tiny demo sweep.

The unit-level statistics (intervals and their coverage: test_intervals.py; duplicate_counts,
grouped split: test_stats.py) are tested there; here every number is traced from the step
files to what the console and report.txt show.
"""
import copy
import json
import re
import shutil
import time

import numpy as np
import pytest

from sweeplib import analysis
import common
import compare_all_steps
from sweeplib import intervals
import run_all
from conftest import FAST_FLAGS, write_record
from sweeplib import data
from sweeplib.splits import make_splits
from sweeplib import metrics
from sweeplib import stepfiles
from sweeplib import duplicates

SEED = 42                                          # common.DEFAULTS["seed"]
CI_METRICS_TWO_CLASS = {"auroc", "recall_at_fpr_1", "recall_at_fpr_5", "detection_rate",
                        "accuracy"}
CI_METRICS_ONE_CLASS = {"auroc_vs_reference_negatives", "recall_at_fpr_1", "recall_at_fpr_5",
                        "detection_rate", "accuracy"}
CI_TEXT = re.compile(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]")


# ---- helpers ---------------------------------------------------------------------------------
def _run(cache, out, *extra):
    """run_all on a cache into out with the fast flags; asserts exit code 0."""
    rc = run_all.main(["--cache-dir", str(cache), "--results-dir", str(out)] + FAST_FLAGS
                      + [str(x) for x in extra])
    assert rc == 0
    return out


def _records(results_dir):
    """{step number: step JSON} of a results folder."""
    return {k: json.loads(p.read_text()) for k, p in analysis.step_files(results_dir).items()}


def _scores(results_dir, records):
    """{step number: per-sample scores} checked against each record's run id."""
    return {k: stepfiles.load_scores(results_dir / f"step_{k}_scores.npz", r["run_id"])
            for k, r in records.items()}


def _section(text, title):
    """Body of the text section whose title line starts with `title` (up to the next section)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if (line.startswith(title) and i + 1 < len(lines)
                and set(lines[i + 1]) == {"-"} and len(lines[i + 1]) == len(line)):
            body = []
            for j in range(i + 2, len(lines)):
                if (j + 1 < len(lines) and lines[j + 1] and set(lines[j + 1]) == {"-"}
                        and len(lines[j + 1]) == len(lines[j]) and not lines[j].startswith("-")
                        and "  " not in lines[j]):
                    break                                  # next section title
                body.append(lines[j])
            return "\n".join(body)
    raise AssertionError(f"section {title!r} not found")


def _table_row(section, first_cell):
    """The table row of a section whose first cell is `first_cell`."""
    rows = [ln for ln in section.splitlines() if ln.split("  ")[0].strip() == first_cell]
    assert rows, f"no row {first_cell!r} in\n{section}"
    return rows[0]


def _ci_str(value, ci):
    """A value and its CI as the report prints them, built here independently."""
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _estimates_by_hand(record, sc, name):
    """Estimates of one set of one step, built straight from intervals.py (not via probe)."""
    s, y = sc[name]["score"], sc[name]["label"]
    th = record["thresholds"]["log_odds"]
    af, neg = s[y == 1], s[y == 0]
    out = {"detection_rate": intervals.proportion_estimate(af >= 0),
           "accuracy": intervals.proportion_estimate((s >= 0) == (y == 1))}
    if len(neg):
        out["auroc"] = intervals.auroc_estimate(af, neg)
    ref = record["evaluation"][name]["reference_negatives"]
    if ref:
        out["auroc_vs_reference_negatives"] = intervals.auroc_estimate(
            af, sc[ref]["score"][sc[ref]["label"] == 0])
    for pct, t in th.items():
        out[f"recall_at_fpr_{pct}"] = intervals.proportion_estimate(af >= t)
        if len(neg):
            out[f"eval_fpr_{pct}"] = intervals.proportion_estimate(neg >= t)
    return {k: v for k, v in out.items() if v is not None}


@pytest.fixture(scope="module")
def loaded(tiny_cache):
    datasets, _, _ = data.load_cache(tiny_cache, 40, list(common.DATASETS))
    return datasets


@pytest.fixture(scope="module")
def tiny_analysis(tiny_run):
    return analysis.analyze(tiny_run)


@pytest.fixture(scope="module")
def repeats_run(tiny_cache, tmp_path_factory):
    """The full sweep with --repeats 3 (seeds 42, 43, 44)."""
    return _run(tiny_cache, tmp_path_factory.mktemp("repeats"), "--repeats", "3")


# ---- confidence intervals in the step files --------------------------------------------------
def test_every_eval_metric_has_a_ci_containing_its_point(tiny_run, repeats_run):
    for results in (tiny_run, repeats_run):
        records = _records(results)
        assert sorted(records) == [s.number for s in common.STEPS]
        for k, rec in records.items():
            for name, entry in rec["evaluation"].items():
                two_class = entry["auroc"] is not None
                expected = CI_METRICS_TWO_CLASS if two_class else CI_METRICS_ONE_CLASS
                ci = entry["ci"]
                assert expected <= set(ci), (k, name, expected - set(ci))
                if two_class:
                    assert "auroc_vs_reference_negatives" not in ci
                else:
                    assert "auroc" not in ci and entry["af_samples"] == entry["n_samples"]
                flat = metrics.flat_metrics(entry)
                for m in expected:
                    lo, hi = ci[m]
                    value = flat[m]
                    assert value is not None, (k, name, m)
                    assert 0.0 <= lo <= hi <= 1.0, (k, name, m, ci[m])
                    assert lo - 1e-12 <= value <= hi + 1e-12, (k, name, m, value, ci[m])
    # the demo data has both kinds of set, so both branches above ran
    kinds = {e["auroc"] is None for e in _records(tiny_run)[0]["evaluation"].values()}
    assert kinds == {True, False}


def test_cis_are_reproducible_from_saved_scores_and_follow_them(tiny_run, capsys):
    """Recomputing the intervals from the saved scores gives the stored ones bit for bit;
    changed scores give other intervals. Prints the time of the statistics (no timing assert)."""
    records = _records(tiny_run)
    scores = _scores(tiny_run, records)
    t_ci, changed = 0.0, 0
    for k, rec in records.items():
        stored = {n: e["ci"] for n, e in rec["evaluation"].items()}
        ev = copy.deepcopy(rec["evaluation"])
        for e in ev.values():
            del e["ci"]
        t = time.perf_counter()
        metrics.add_confidence_intervals(ev, scores[k], rec["thresholds"]["log_odds"])
        t_ci += time.perf_counter() - t
        assert {n: e["ci"] for n, e in ev.items()} == stored, k
        other = copy.deepcopy(ev)
        shifted = {n: dict(f, score=f["score"] + np.where(f["label"] == 1, -0.5, 0.5))
                   if "label" in f else f for n, f in scores[k].items()}
        metrics.add_confidence_intervals(other, shifted, rec["thresholds"]["log_odds"])
        changed += sum(other[n]["ci"] != stored[n] for n in stored)
    assert changed > 0, "the scores do not reach the intervals"
    t = time.perf_counter()
    analysis.analyze(tiny_run)
    t_an = time.perf_counter() - t
    with capsys.disabled():
        print(f"\n[timing] tiny run: add_confidence_intervals {t_ci * 1000:.0f} ms for "
              f"{len(records)} steps; analysis.analyze {t_an * 1000:.0f} ms")


def test_rerun_gives_identical_cis_and_repeats(tiny_cache, repeats_run, tmp_path):
    again = _run(tiny_cache, tmp_path, "--repeats", "3", "--steps", "0", "3")
    a, b = _records(repeats_run), _records(again)
    for k in (0, 3):
        for name in a[k]["evaluation"]:
            assert a[k]["evaluation"][name]["ci"] == b[k]["evaluation"][name]["ci"], (k, name)
        assert a[k]["repeats"] == b[k]["repeats"], k


def test_console_and_report_show_value_with_ci(tiny_run, capsys):
    assert compare_all_steps.main(["--results-dir", str(tiny_run)]) == 0
    console = capsys.readouterr().out
    report = (tiny_run / "report.txt").read_text()
    records = _records(tiny_run)
    a = analysis.analyze(tiny_run)
    for text in (console, report):
        for name, s in a.sets.items():
            sec = _section(text, f"{s['role']}: {s['title']}")
            shown = s["metrics"][:2]
            assert s["headline"] == shown[0]
            for k, rec in records.items():
                entry = rec["evaluation"][name]
                flat = metrics.flat_metrics(entry)
                row = _table_row(sec, str(k))
                cells = CI_TEXT.findall(row)
                assert len(cells) >= len(shown), row
                for m, cell in zip(shown, cells):
                    # what is printed is the step file's point value and CI
                    assert cell == _ci_str(flat[m], entry["ci"][m]), (name, k, m, row)


# ---- paired deltas, verdicts, inflection -----------------------------------------------------
def test_paired_deltas_pair_the_same_rows_across_steps(tiny_run, tiny_analysis):
    records = _records(tiny_run)
    scores = _scores(tiny_run, records)
    a = tiny_analysis
    n_checked, unpaired_differs = 0, False
    for name, s in a.sets.items():
        chain = sorted(k for k in s["rows"] if k in common.STEP_BY_NUMBER)
        assert sorted(s["deltas"]) == chain[1:]
        for ka, kb in zip(chain, chain[1:]):
            # pairing needs the same eval rows in both steps
            assert np.array_equal(scores[ka][name]["row"], scores[kb][name]["row"])
            assert np.array_equal(scores[ka][name]["label"], scores[kb][name]["label"])
            ea = _estimates_by_hand(records[ka], scores[ka], name)
            eb = _estimates_by_hand(records[kb], scores[kb], name)
            fa = metrics.flat_metrics(records[ka]["evaluation"][name])
            fb = metrics.flat_metrics(records[kb]["evaluation"][name])
            assert set(s["deltas"][kb]) == {m for m in s["metrics"] if m in ea and m in eb}
            for m, got in s["deltas"][kb].items():
                want = intervals.change(ea[m], eb[m], paired=True)
                assert got["ci"] == pytest.approx(want["ci"], abs=1e-12), (name, kb, m)
                assert got["p_value"] == pytest.approx(want["p_value"], abs=1e-12)
                assert got["delta"] == pytest.approx(fb[m] - fa[m], abs=1e-12)
                n_checked += 1
                # the same change treated as two independent samples gives another interval
                un = intervals.change(ea[m], eb[m], paired=False)
                unpaired_differs |= un["ci"] != pytest.approx(got["ci"], abs=1e-12)
    assert n_checked >= 3 * len(a.sets)
    assert unpaired_differs


def _check_verdict(d):
    """A call agrees with its p-value (Holm-adjusted where given) and with its interval."""
    lo, hi = d["ci"]
    p = d.get("p_adjusted", d["p_value"])
    if d["verdict"] == "improved":
        assert lo > 0 and d["delta"] > 0 and p < 0.05, d
    elif d["verdict"] == "degraded":
        assert hi < 0 and d["delta"] < 0 and p < 0.05, d
    else:
        assert d["verdict"] == "no clear change", d
        assert p >= 0.05 or d["delta"] == 0, d
    # the interval excludes 0 exactly when the unadjusted p is below 0.05
    assert (lo > 0 or hi < 0) == (d["p_value"] < 0.05), d


def _check_analysis(a):
    """Every verdict agrees with its CI; every inflection is the largest significant gain.
    Returns (all verdicts, {set: significant headline gains as (delta, step)})."""
    verdicts, gains = [], {}
    for name, s in a.sets.items():
        for k, per in s["deltas"].items():
            for d in per.values():
                _check_verdict(d)
                verdicts.append(d["verdict"])
        if s["overall"]:
            _check_verdict(s["overall"])
        head = s["headline"]
        gains[name] = [(s["deltas"][k][head]["delta"], k) for k in sorted(s["deltas"])
                       if head in s["deltas"][k]
                       and s["deltas"][k][head]["verdict"] == "improved"]
        expected = max(gains[name])[1] if gains[name] else None
        assert s["inflection"] == expected, (name, gains[name], s["inflection"])
    return verdicts, gains


def test_verdicts_need_a_ci_excluding_zero_and_inflection_is_largest_significant_gain(
        tiny_analysis):
    verdicts, _ = _check_analysis(tiny_analysis)
    assert "improved" in verdicts and "no clear change" in verdicts
    infl = {n: s["inflection"] for n, s in tiny_analysis.sets.items()}
    assert None in infl.values() and any(v is not None for v in infl.values()), infl


def test_inflection_is_the_largest_not_the_first_significant_gain(tiny_run, tmp_path):
    """The tiny run's steps in another order (1, 2, 0, 3) give a set with two significant
    gains where the later one is larger, and significant drops."""
    perm = [1, 2, 0, 3]
    for new, old in enumerate(perm):
        src = analysis.step_files(tiny_run)[old]
        record = json.loads(src.read_text())
        record["step"] = new                    # a record names its own step (else ignored)
        write_record(tmp_path / f"step_{new}_{src.name.split('_', 2)[2]}", record)
        shutil.copy(tiny_run / f"step_{old}_scores.npz", tmp_path / f"step_{new}_scores.npz")
        shutil.copy(tiny_run / f"step_{old}_probe.pkl", tmp_path / f"step_{new}_probe.pkl")
    a = analysis.analyze(tmp_path, controls=False)
    verdicts, gains = _check_analysis(a)
    assert "degraded" in verdicts and "improved" in verdicts
    assert any(len(g) >= 2 and max(g) != g[0] for g in gains.values()), gains


def test_analysis_cis_equal_the_step_file_cis(tiny_run, tiny_analysis):
    """analyze() recomputes the intervals from the scores: they must be the stored ones."""
    records = _records(tiny_run)
    for name, s in tiny_analysis.sets.items():
        for k, row in s["rows"].items():
            ci = records[k]["evaluation"][name]["ci"]
            for m in s["metrics"]:
                if m in row and row[m]["ci"] is not None:
                    assert row[m]["ci"] == pytest.approx(ci[m], abs=1e-12), (name, k, m)


# ---- repeated seeds --------------------------------------------------------------------------
def test_repeats_record_three_seeds_with_their_own_metrics(repeats_run):
    records = _records(repeats_run)
    any_set_differs = False
    for k, rec in records.items():
        reps = rec["repeats"]
        assert [r["seed"] for r in reps] == [SEED, SEED + 1, SEED + 2]
        assert rec["config"]["repeats"] == 3
        for r in reps:
            assert set(r["metrics"]) == set(rec["evaluation"])
            assert 0.0 <= r["cv_auroc_mean"] <= 1.0
        # the first repeat is the run the step file reports
        assert reps[0]["metrics"] == {n: metrics.flat_metrics(e)
                                      for n, e in rec["evaluation"].items()}
        assert reps[0]["cv_auroc_mean"] == rec["cv_auroc_mean"]
        for name in rec["evaluation"]:
            vals = [json.dumps(r["metrics"][name], sort_keys=True) for r in reps]
            any_set_differs |= len(set(vals)) > 1
    assert any_set_differs


def test_repeat_seed_matches_a_run_with_that_seed(tiny_cache, repeats_run, tmp_path):
    """repeats[1] is exactly what --seed 43 gives (split, folds and model all follow the seed)."""
    single = _records(_run(tiny_cache, tmp_path, "--seed", str(SEED + 1), "--steps", "3"))
    rep = _records(repeats_run)[3]["repeats"][1]
    assert rep["seed"] == SEED + 1
    assert rep["metrics"] == {n: metrics.flat_metrics(e)
                              for n, e in single[3]["evaluation"].items()}
    assert rep["cv_auroc_mean"] == single[3]["cv_auroc_mean"]


def test_different_seeds_give_different_splits_of_equal_size(loaded):
    splits = {s: make_splits(loaded, 0.2, s) for s in (SEED, SEED + 1, SEED + 2)}
    again = make_splits(loaded, 0.2, SEED)
    for name, ds in loaded.items():
        sizes = {(len(sp.train), len(sp.eval)) for sp in (x[name] for x in splits.values())}
        assert len(sizes) == 1, name
        assert np.array_equal(again[name].eval, splits[SEED][name].eval)
        if common.DATASETS[name].role == "split":
            evals = [tuple(splits[s][name].eval) for s in splits]
            assert len(set(evals)) == 3, name
            for s in splits:                       # stratified: same class counts each time
                cls = np.unique(ds.classes[splits[s][name].eval], return_counts=True)[1]
                ref = np.unique(ds.classes[splits[SEED][name].eval], return_counts=True)[1]
                assert np.array_equal(cls, ref), name


def test_report_shows_repeated_seeds_with_mean_sd_and_spread_flag(repeats_run):
    records = _records(repeats_run)
    a = analysis.analyze(repeats_run)
    sec = _section((repeats_run / "report.txt").read_text(), "Repeated seeds")
    assert "range > CI width" in sec
    flags = []
    for k, rec in records.items():
        assert k in a.repeats
        for name, s in a.sets.items():
            m = s["headline"]
            vals = [r["metrics"][name][m] for r in rec["repeats"]]
            mean, sd = float(np.mean(vals)), float(np.std(vals, ddof=1))
            lo, hi = rec["evaluation"][name]["ci"][m]
            flag = (max(vals) - min(vals)) > (hi - lo)
            got = a.repeats[k][name]
            assert got["mean"] == pytest.approx(mean) and got["sd"] == pytest.approx(sd)
            assert got["n"] == 3 and got["spread_exceeds_ci"] == flag, (k, name)
            rows = [ln for ln in sec.splitlines()
                    if ln.startswith(f"{k} {rec['name']}") and f"  {name}  " in ln]
            assert len(rows) == 1, (k, name)
            assert f"{mean:.3f} +- {sd:.3f} (n=3)" in rows[0]
            assert rows[0].rstrip().endswith("YES" if flag else "no"), rows[0]
            flags.append(flag)
    assert False in flags
    # the other branch: spread the repeats of one set far beyond its interval
    k, name = min(records), next(iter(a.sets))
    m = a.sets[name]["headline"]
    spread = copy.deepcopy(records)
    for i, r in enumerate(spread[k]["repeats"]):
        r["metrics"][name][m] = [0.0, 0.5, 1.0][i]
    got = analysis._repeats(spread, sorted(spread), a.sets)[k][name]
    assert got["spread_exceeds_ci"] is True and got["range"] == 1.0


def test_single_seed_run_has_no_repeated_seeds_section(tiny_run):
    records = _records(tiny_run)
    assert all(len(r["repeats"]) == 1 and r["repeats"][0]["seed"] == SEED
               for r in records.values())
    assert "Repeated seeds" not in (tiny_run / "report.txt").read_text()


# ---- leakage audit ---------------------------------------------------------------------------
N_EXACT_BENCH, N_EXACT_GOLD = 4, 3                    # planted exact copies


def _plant(cache, datasets):
    """Plant duplicates of eval rows into training rows (labels untouched, same class).

    benchmark: 4 held-out rows (seed-42 split) copied over 4 training rows + 1 near copy;
    gold_106: 3 rows copied over rows of `train` + 1 near copy.
    Returns the (eval row, train row) pairs of the exact benchmark copies.
    """
    layer = data.layer_dir(cache, 40)
    split = make_splits(datasets, 0.2, SEED)["benchmark"]
    rng = np.random.default_rng(0)

    def near(row):
        out = row.astype(np.float64) * 1.001
        nz = out != 0
        out[nz] += rng.normal(0, 1e-4, nz.sum()) * np.abs(out[nz])
        return np.maximum(out, 0).astype(row.dtype)

    bench = np.load(layer / "benchmark_activations.npy")
    cls = datasets["benchmark"].classes
    used, pairs = set(), []
    ev = [int(i) for i in split.eval if bench[i].any()]
    for e in ev[: N_EXACT_BENCH + 1]:
        t = next(int(i) for i in split.train if cls[i] == cls[e] and int(i) not in used)
        used.add(t)
        pairs.append((e, t))
    for e, t in pairs[:N_EXACT_BENCH]:
        bench[t] = bench[e]
    e, t = pairs[N_EXACT_BENCH]
    bench[t] = near(bench[e])
    np.save(layer / "benchmark_activations.npy", bench)

    train = np.load(layer / "train_activations.npy")
    gold = np.load(layer / "test_activations.npy")
    ty, gy = datasets["train"].y, datasets["gold_106"].y
    used = set()
    for g in range(N_EXACT_GOLD + 1):
        t = next(i for i in range(len(ty)) if ty[i] == gy[g] and i not in used)
        used.add(t)
        train[t] = gold[g] if g < N_EXACT_GOLD else near(gold[g])
    np.save(layer / "train_activations.npy", train)
    return pairs[:N_EXACT_BENCH]


def _pairs(audit):
    return {(p["train"], p["eval"]): (p["exact"], p["near"]) for p in audit["pairs"]}


def test_leakage_audit_counts_planted_duplicates_and_warns(cache_copy, tiny_run, loaded,
                                                           tmp_path, capsys):
    _plant(cache_copy, loaded)
    planted, _, _ = data.load_cache(cache_copy, 40, list(common.DATASETS))
    # labels are untouched, so the split (and hence the planted pairs) does not move
    assert np.array_equal(make_splits(planted, 0.2, SEED)["benchmark"].eval,
                          make_splits(loaded, 0.2, SEED)["benchmark"].eval)
    out = tmp_path / "res"
    rc = run_all.main(["--cache-dir", str(cache_copy), "--results-dir", str(out),
                       "--jobs", "1", "--steps", "0", "3"])
    assert rc == 0
    console, log = capsys.readouterr()          # warnings on stderr, the comparison on stdout
    base = _pairs(_records(tiny_run)[0]["leakage_audit"])
    for rec in _records(out).values():
        got = _pairs(rec["leakage_audit"])
        assert set(got) == set(base)
        b_ex, b_near = base[("benchmark", "benchmark")]
        g_ex, g_near = base[("train", "gold_106")]
        assert got[("benchmark", "benchmark")] == (b_ex + N_EXACT_BENCH, b_near + N_EXACT_BENCH + 1)
        assert got[("train", "gold_106")] == (g_ex + N_EXACT_GOLD, g_near + N_EXACT_GOLD + 1)
        others = {p: v for p, v in got.items()
                  if p not in (("benchmark", "benchmark"), ("train", "gold_106"))}
        assert others == {p: base[p] for p in others}
        assert rec["leakage_audit"]["n_pairs_with_duplicates"] == sum(
            1 for v in got.values() if any(v))
    # the run's log and the console comparison both warn, naming the pair
    assert (f"warning: leakage audit: {N_EXACT_GOLD} exact / {N_EXACT_GOLD + 1} near duplicates "
            "of training part 'train' in eval set 'gold_106'") in log
    report = (out / "report.txt").read_text()
    for text in (console, report):
        sec = _section(text, "Leakage audit")
        assert "WARNING:" in sec
        row = _table_row(sec, "train")
        assert row.split() == ["train", "gold_106", str(N_EXACT_GOLD), str(N_EXACT_GOLD + 1),
                               "20"]
        row = [ln for ln in sec.splitlines() if ln.split()[:2] == ["benchmark", "benchmark"]]
        assert len(row) == 1 and row[0].split()[2:4] == [str(N_EXACT_BENCH),
                                                         str(N_EXACT_BENCH + 1)]


def test_dedup_split_keeps_exact_duplicate_groups_on_one_side(cache_copy, loaded, tmp_path):
    pairs = _plant(cache_copy, loaded)
    planted, _, _ = data.load_cache(cache_copy, 40, list(common.DATASETS))
    X = planted["benchmark"].X

    def crossing(split):
        return duplicates.duplicate_counts(X[split.train], X[split.eval])["exact"]

    plain = make_splits(planted, 0.2, SEED)["benchmark"]
    assert crossing(plain) == N_EXACT_BENCH                 # every planted pair crosses
    for seed in (SEED, SEED + 1):
        dedup = make_splits(planted, 0.2, seed, dedup=True)["benchmark"]
        assert crossing(dedup) == 0, seed
        in_eval = set(dedup.eval.tolist())
        for e, t in pairs:
            assert (e in in_eval) == (t in in_eval), (seed, e, t)
        assert not set(dedup.train.tolist()) & in_eval
        assert len(dedup.train) + len(dedup.eval) == X.shape[0]
        assert abs(len(dedup.eval) - 0.2 * X.shape[0]) <= 0.05 * X.shape[0]
    # the same through the pipeline: the audit of a --dedup-split run sees no exact crossing
    # inside the benchmark, but still sees the gold_106 copies in `train` (another dataset)
    out = _run(cache_copy, tmp_path / "res", "--dedup-split", "--steps", "0")
    rec = _records(out)[0]
    got = _pairs(rec["leakage_audit"])
    assert got[("benchmark", "benchmark")][0] == 0
    assert got[("train", "gold_106")][0] == N_EXACT_GOLD
    assert rec["config"]["dedup_split"] is True
    assert rec["split_sizes"]["benchmark"]["eval"] == len(
        make_splits(planted, 0.2, SEED, dedup=True)["benchmark"].eval)


def test_findings_say_what_the_calls_say(tiny_analysis):
    """A set's finding names every improved/degraded headline step, and says "no step changes"
    only when there is none (the two used to disagree)."""
    a = tiny_analysis
    lines = a.findings
    premise_lines = [ln for ln in lines if ln.startswith("premise ")]
    assert lines[:len(premise_lines)] == premise_lines and premise_lines      # printed first
    for name, s in a.sets.items():
        m = s["headline"]
        calls = {b: d[m]["verdict"] for b, d in s["deltas"].items() if m in d
                 and d[m]["verdict"] != "no clear change"}
        mine = [ln for ln in lines if ln.startswith(f"{name}: ") and "step" in ln
                and "detection rate" not in ln and "not used" not in ln
                and "the verdict's test" not in ln]
        assert len(mine) == 1, (name, mine)
        if calls:
            for b, verdict in calls.items():
                assert f"{verdict} at step {b}" in mine[0]
        else:
            assert "no step changes" in mine[0]
