"""The verdict on hand-made analyses (verdict.decide), and end to end on negative-control demos.

Each hand-made analysis is built from synthetic scores per step and eval set, with the fields
analysis.analyze gives the verdict; the truth of every case is known by construction."""
import json

import numpy as np
import pytest
from scipy.stats import norm

from sweeplib import intervals
import run_all
from sweeplib import verdict
from sweeplib.analysis import Analysis
from conftest import FAST_FLAGS
from sweeplib import demo

STEPS = {0: ["train"], 1: ["train", "sycophant"], 2: ["train", "sycophant", "model_organism"],
         3: ["train", "sycophant", "model_organism", "benchmark"]}


def _scores(rng, n_pos, n_neg, auc, shared=None, rho=0.8):
    """(pos, neg) binormal scores with the given AUROC; shared: per-row noise common to
    several probes (correlation rho between them)."""
    d = np.sqrt(2) * norm.ppf(auc)
    e_pos, e_neg = rng.normal(size=n_pos), rng.normal(size=n_neg)
    if shared is not None:
        e_pos = np.sqrt(rho) * shared[0] + np.sqrt(1 - rho) * e_pos
        e_neg = np.sqrt(rho) * shared[1] + np.sqrt(1 - rho) * e_neg
    return d + e_pos, e_neg


def make_analysis(sets, steps=(0, 3), converged=True, audit=None, seed=0):
    """An analysis.Analysis from {name: {"role", "kind", "reference", "scores": {step: (pos,
    neg)}}}; single-class sets have neg None and are ranked against their reference's
    negatives."""
    a = Analysis(steps=list(steps), sets={}, estimates={}, scores={k: {} for k in steps},
                 records={k: {"training_data": STEPS[k], "converged": converged,
                              "cv_converged": True, "repeats": [{"seed": 0, "metrics": {}}]}
                          for k in steps},
                 audit=audit, config={"seed": seed})
    for name, spec in sets.items():
        for k in steps:
            pos, neg = spec["scores"][k]
            label = np.r_[np.ones(len(pos)), np.zeros(0 if neg is None else len(neg))]
            a.scores[k][name] = {"label": label, "row": np.arange(len(label))}
    for name, spec in sets.items():
        rows = {}
        for k in steps:
            pos, neg = spec["scores"][k]
            if neg is None:
                ref = sets[spec["reference"]]["scores"][k][1]
                est = {"auroc_vs_reference_negatives": intervals.auroc_estimate(pos, ref),
                       "detection_rate": intervals.proportion_estimate(pos >= 0)}
            else:
                est = {"auroc": intervals.auroc_estimate(pos, neg)}
            a.estimates[(k, name)] = est
            rows[k] = {m: {"value": e.value, "ci": intervals.interval(e)} for m, e in est.items()}
            rows[k].update(n=len(pos) + (0 if neg is None else len(neg)), af=len(pos))
        single = spec["scores"][steps[0]][1] is None
        a.sets[name] = {
            "kind": "single-class" if single else "two-class", "role": spec["role"],
            "headline": "auroc_vs_reference_negatives" if single else "auroc", "rows": rows,
            "reference": spec.get("reference"), "deltas": {},
            "confounded_from": spec.get("confounded_from")}
    return a


def _gold(rng, auc0=0.95, auc3=0.95, n=(51, 55), rho=0.8):
    """gold_106 scores at steps 0 and 3 sharing per-row noise (correlated probes)."""
    shared = (rng.normal(size=n[0]), rng.normal(size=n[1]))
    return {"role": "in-distribution", "scores": {0: _scores(rng, *n, auc0, shared, rho),
                                                  3: _scores(rng, *n, auc3, shared, rho)}}


def _bench(rng, auc0=0.5, auc3=0.5, n=(100, 350)):
    """benchmark scores (two classes from one source) at steps 0 and 3."""
    return {"role": "OOD", "scores": {0: _scores(rng, *n, auc0), 3: _scores(rng, *n, auc3)}}


def _syco(rng, auc0=0.5, auc3=0.99, n=60):
    """An all-AF set ranked against the benchmark's negatives, confounded from step 1."""
    pos0, _ = _scores(rng, n, 1, auc0)
    pos3, _ = _scores(rng, n, 1, auc3)
    return {"role": "OOD", "reference": "benchmark", "confounded_from": 1,
            "scores": {0: (pos0, None), 3: (pos3, None)}}


def test_a_confounded_all_af_improvement_alone_claims_nothing():
    rng = np.random.default_rng(0)
    a = make_analysis({"gold_106": _gold(rng), "benchmark": _bench(rng),
                       "sycophant": _syco(rng)})
    # the all-AF set's own change is large and "significant" ...
    d = intervals.change(a.estimates[(0, "sycophant")]["auroc_vs_reference_negatives"],
                         a.estimates[(3, "sycophant")]["auroc_vs_reference_negatives"])
    assert d["delta"] > 0.3 and d["p_value"] < 1e-6
    v = verdict.decide(a)
    # ... but only the benchmark carries the verdict, and it did not move
    assert v["outcome"] == "no_improvement" and not v["claims_ood_improvement"]
    assert v["sets_used"] == ["benchmark"]
    assert [x["set"] for x in v["sets_excluded"]] == ["sycophant"]
    assert "confounded by source" in v["sets_excluded"][0]["reason"]


def test_without_a_two_class_ood_set_the_verdict_is_inconclusive():
    rng = np.random.default_rng(1)
    bench = _bench(rng)
    bench["role"] = "reference only"          # present for its negatives, not as an OOD set
    a = make_analysis({"gold_106": _gold(rng), "benchmark": bench, "sycophant": _syco(rng)})
    v = verdict.decide(a)
    assert v["outcome"] == "inconclusive"
    assert any("ood_set_measures_intent" in r for r in v["reasons"])


def test_planted_benchmark_gain_with_gold_holding_is_diversity_helps():
    rng = np.random.default_rng(2)
    a = make_analysis({"gold_106": _gold(rng, 0.97, 0.97, rho=0.95),
                       "benchmark": _bench(rng, 0.5, 0.9)})
    v = verdict.decide(a)
    assert v["outcome"] == "diversity_helps", v["reasons"]
    assert v["in_distribution"]["holds"] and v["in_distribution"]["one_sided_lower"] > -0.02


def test_gold_drop_outside_the_tolerance_is_a_trade_off():
    rng = np.random.default_rng(3)
    a = make_analysis({"gold_106": _gold(rng, 0.97, 0.80), "benchmark": _bench(rng, 0.5, 0.9)})
    v = verdict.decide(a)
    assert v["outcome"] == "trade_off", v["reasons"]
    assert v["in_distribution"]["drops"] and v["in_distribution"]["ci"][1] < 0


def test_a_significant_drop_inside_the_tolerance_is_not_a_trade_off():
    """gold_106 truly drops by 0.015 (inside the 0.02 tolerance): the drop is often significant
    and "holds" often not shown, but the verdict must never say the drop exceeds the tolerance."""
    rng = np.random.default_rng(12)
    significant_not_holding = 0
    for _ in range(30):
        a = make_analysis({"gold_106": _gold(rng, 0.97, 0.955, n=(150, 150), rho=0.9),
                           "benchmark": _bench(rng, 0.5, 0.9)})
        v = verdict.decide(a)
        gold = v["in_distribution"]
        significant_not_holding += gold["ci"][1] < 0 and not gold["holds"]
        assert v["outcome"] != "trade_off" and not gold["drops"], v["reasons"]
    assert significant_not_holding >= 3          # the case the old rule called a trade-off


def test_a_set_whose_rows_differ_between_steps_is_not_paired_into_the_verdict():
    rng = np.random.default_rng(13)
    a = make_analysis({"gold_106": _gold(rng), "benchmark": _bench(rng, 0.5, 0.9)})
    a.scores[3]["benchmark"]["row"] = a.scores[3]["benchmark"]["row"] + 1
    v = verdict.decide(a)
    assert v["sets_used"] == [] and "differ between steps" in v["sets_excluded"][0]["reason"]


def test_a_gold_drop_that_cannot_be_bounded_is_inconclusive_not_harmless():
    """Small gold set: no significant drop, but the interval reaches past the tolerance."""
    rng = np.random.default_rng(4)
    a = make_analysis({"gold_106": _gold(rng, 0.95, 0.90, n=(12, 12)),
                       "benchmark": _bench(rng, 0.5, 0.9)})
    v = verdict.decide(a)
    gold = v["in_distribution"]
    assert not gold["holds"] and not gold["drops"] and gold["one_sided_lower"] < -0.02
    assert v["outcome"] == "inconclusive" and v["claims_ood_improvement"]
    assert any("cannot tell" in r for r in v["reasons"])


def test_the_tolerance_decides_between_holds_and_cannot_tell():
    rng = np.random.default_rng(5)
    a = make_analysis({"gold_106": _gold(rng, 0.96, 0.95), "benchmark": _bench(rng, 0.5, 0.9)})
    lower = verdict.decide(a)["in_distribution"]["one_sided_lower"]
    loose = verdict.decide(a, verdict.Criteria(gold_tolerance=-lower + 0.005))
    tight = verdict.decide(a, verdict.Criteria(gold_tolerance=-lower - 0.005))
    assert loose["outcome"] == "diversity_helps" and tight["outcome"] != "diversity_helps"


def test_gold_at_chance_makes_the_verdict_inconclusive():
    rng = np.random.default_rng(6)
    gold = {"role": "in-distribution", "scores": {0: _scores(rng, 51, 55, 0.5),
                                                  3: _scores(rng, 51, 55, 0.5)}}
    a = make_analysis({"gold_106": gold, "benchmark": _bench(rng, 0.5, 0.95)})
    v = verdict.decide(a)
    assert v["outcome"] == "inconclusive" and not v["claims_ood_improvement"]
    failed = [p["name"] for p in v["premises"] if not p["passed"]]
    assert failed == ["base_probe_above_chance"]


def test_gold_with_one_class_is_inconclusive():
    rng = np.random.default_rng(7)
    gold = {"role": "in-distribution", "reference": "benchmark",
            "scores": {0: (rng.normal(size=30), None), 3: (rng.normal(size=30), None)}}
    a = make_analysis({"gold_106": gold, "benchmark": _bench(rng, 0.5, 0.95)})
    v = verdict.decide(a)
    assert v["outcome"] == "inconclusive"
    assert "in_distribution_measured" in [p["name"] for p in v["premises"] if not p["passed"]]


def test_a_leaky_set_is_excluded_and_a_small_one_too():
    rng = np.random.default_rng(8)
    bench = _bench(rng, 0.5, 0.95)
    n_eval = 450
    audit = {"pairs": [{"train": "benchmark", "eval": "benchmark", "exact": 300, "near": 300,
                        "n_eval": n_eval, "near_rows": list(range(300))},
                       {"train": "train", "eval": "gold_106", "exact": 0, "near": 0,
                        "n_eval": 106, "near_rows": []}]}
    a = make_analysis({"gold_106": _gold(rng), "benchmark": bench}, audit=audit)
    v = verdict.decide(a)
    assert v["outcome"] == "inconclusive" and v["sets_used"] == []
    assert "67%" in v["sets_excluded"][0]["reason"]
    small = make_analysis({"gold_106": _gold(rng), "benchmark": _bench(rng, 0.5, 0.95,
                                                                       n=(8, 40))})
    v = verdict.decide(small)
    assert v["sets_used"] == [] and "too small" in v["sets_excluded"][0]["reason"]


def test_unconverged_fits_make_the_verdict_inconclusive():
    rng = np.random.default_rng(9)
    a = make_analysis({"gold_106": _gold(rng), "benchmark": _bench(rng, 0.5, 0.95)},
                      converged=False)
    v = verdict.decide(a)
    assert v["outcome"] == "inconclusive"
    assert [p["name"] for p in v["premises"] if not p["passed"]] == ["fits_converged"]


def test_the_ood_family_is_holm_adjusted():
    """Two OOD sets whose raw p-values are both just under 0.05: unadjusted, both would be
    claimed; Holm claims at most one."""
    rng = np.random.default_rng(10)
    found = None
    for _ in range(400):
        sets = {"gold_106": _gold(rng), "benchmark": _bench(rng, 0.5, 0.57, n=(60, 60)),
                "extra_set": dict(_bench(rng, 0.5, 0.57, n=(60, 60)), role="extra")}
        v = verdict.decide(make_analysis(sets))
        raw = [t["p_value"] for t in v["ood_tests"]]
        if all(0.025 < p < 0.05 for p in raw) and all(t["delta"] > 0 for t in v["ood_tests"]):
            found = v
            break
    assert found is not None
    assert sum(t["improved"] for t in found["ood_tests"]) == 0
    assert all(t["p_adjusted"] >= 0.05 for t in found["ood_tests"])


@pytest.mark.slow
def test_verdict_false_claim_rate_under_the_null_by_simulation():
    """No OOD signal at any step: the verdict claims an OOD improvement in <= 5 % of runs;
    with a planted gain it claims it in >= 80 %."""
    rng = np.random.default_rng(11)
    claims = {"null": 0, "planted": 0}
    runs = 150
    for _ in range(runs):
        for case, auc3 in (("null", 0.5), ("planted", 0.8)):
            sets = {"gold_106": _gold(rng), "benchmark": _bench(rng, 0.5, auc3, n=(26, 90)),
                    "sycophant": _syco(rng)}
            claims[case] += verdict.decide(make_analysis(sets))["claims_ood_improvement"]
    assert claims["null"] / runs <= 0.05 and claims["planted"] / runs >= 0.8, claims


# ---- end to end on negative-control demos ----------------------------------------------------
@pytest.mark.parametrize("null", ["clean", pytest.param("source", marks=pytest.mark.slow)])
def test_null_demo_end_to_end_claims_no_improvement(null, tmp_path):
    cache = tmp_path / "cache"
    demo.generate(cache, scale=0.1, n_features=256, seed=1, verbose=False, null=null)
    out = tmp_path / "res"
    # a lower bar for the base probe: gold_106 has 10 + 10 rows at this size, and the test
    # is about the OOD decision, which a failed premise would skip
    assert run_all.main(["--cache-dir", str(cache), "--results-dir", str(out),
                         "--min-base-auroc", "0.5"] + FAST_FLAGS) == 0
    v = json.loads((out / "verdict.json").read_text())
    assert all(p["passed"] for p in v["premises"]), v["premises"]
    assert v["outcome"] == "no_improvement", v["reasons"]
    assert [t["set"] for t in v["ood_tests"]] == ["benchmark"]
    assert not v["claims_ood_improvement"] and not v["ood_tests"][0]["improved"]
    assert v["demo"]["null"] == null
    # the all-AF sets move (source identity) but are never used
    assert v["sets_used"] == ["benchmark"]
    assert {"sycophant", "model_organism"} <= {x["set"] for x in v["sets_excluded"]}
    report = (out / "report.txt").read_text()
    assert f"VERDICT: {v['outcome']}" in report and "premise ok" in report


# ---- the in-distribution test with the train rows' out-of-fold scores, power, repeats ---------
def _add_oof(a, rng, auc0, auc3, n=(400, 600), rho=0.9, steps=(0, 3)):
    """Out-of-fold scores of the same train rows at both steps (paired, correlated rho), and
    at the last step some rows of another source after them (a bigger mix)."""
    shared = (rng.normal(size=n[0]), rng.normal(size=n[1]))
    for k, auc in zip(steps, (auc0, auc3)):
        pos, neg = _scores(rng, *n, auc, shared, rho)
        s, y = np.r_[pos, neg], np.r_[np.ones(n[0]), np.zeros(n[1])]
        src = np.full(len(y), "train")
        if k == steps[-1]:
            s, y = np.r_[s, rng.normal(size=50)], np.r_[y, np.ones(50)]
            src = np.r_[src, np.full(50, "benchmark")]
        a.scores[k]["_oof"] = {"score": s, "label": y, "source": src}
    return a


def test_out_of_fold_rows_decide_holds_where_gold_106_alone_cannot():
    rng = np.random.default_rng(20)
    sets = {"gold_106": _gold(rng, 0.95, 0.95, rho=0.6), "benchmark": _bench(rng, 0.5, 0.9)}
    alone = verdict.decide(make_analysis(sets))
    assert alone["outcome"] == "inconclusive" and alone["in_distribution"]["basis"] == "gold_106"
    v = verdict.decide(_add_oof(make_analysis(sets), rng, 0.96, 0.958))
    g = v["in_distribution"]
    assert v["outcome"] == "diversity_helps", v["reasons"]
    assert g["basis"] == "combined" and g["holds"] and g["one_sided_lower"] > -0.02
    # gold_106 stays reported alone (its own change, interval and undecided call)
    assert g["delta"] == alone["in_distribution"]["delta"]
    assert g["gold_106"]["label"] == "hand-labelled" and not g["gold_106"]["holds"]
    assert g["oof"]["n_rows"] == 1000 and g["combined"]["weights"]["train_oof"] > 0.8
    assert "decided on gold_106 and the train rows' out-of-fold scores" in " ".join(v["reasons"])


def test_out_of_fold_drop_beyond_the_tolerance_is_a_trade_off():
    rng = np.random.default_rng(21)
    sets = {"gold_106": _gold(rng, 0.95, 0.92, rho=0.6), "benchmark": _bench(rng, 0.5, 0.9)}
    v = verdict.decide(_add_oof(make_analysis(sets), rng, 0.96, 0.90))
    assert v["outcome"] == "trade_off" and v["in_distribution"]["drops"], v["reasons"]
    assert v["in_distribution"]["one_sided_upper"] < -0.02


def test_when_gold_106_disagrees_with_the_out_of_fold_change_gold_106_alone_decides():
    rng = np.random.default_rng(22)
    sets = {"gold_106": _gold(rng, 0.97, 0.75, rho=0.6), "benchmark": _bench(rng, 0.5, 0.9)}
    v = verdict.decide(_add_oof(make_analysis(sets), rng, 0.96, 0.96))
    g = v["in_distribution"]
    assert g["combined"]["heterogeneity_p"] < 0.05 and g["basis"] == "gold_106"
    assert "disagree" in g["basis_note"] and g["holds"] == g["gold_106"]["holds"]
    assert not g["holds"]


def test_out_of_fold_rows_of_a_fixed_budget_or_changed_rows_are_not_used():
    rng = np.random.default_rng(23)
    sets = {"gold_106": _gold(rng), "benchmark": _bench(rng, 0.5, 0.9)}
    a = _add_oof(make_analysis(sets), rng, 0.96, 0.96)
    a.records[3]["sample_weighting"] = {"budget_n": 500}
    assert verdict.decide(a)["in_distribution"]["basis_note"].startswith("step 3 trains on")
    b = _add_oof(make_analysis(sets), rng, 0.96, 0.96)
    b.scores[3]["_oof"]["label"] = b.scores[3]["_oof"]["label"][::-1].copy()
    g = verdict.decide(b)["in_distribution"]
    assert g["oof"] is None and "differ" in g["basis_note"]


def test_every_test_reports_what_it_could_detect_and_the_rows_it_would_need():
    rng = np.random.default_rng(24)
    v = verdict.decide(make_analysis({"gold_106": _gold(rng, 0.95, 0.94, rho=0.6),
                                      "benchmark": _bench(rng, 0.5, 0.9)}))
    g = v["in_distribution"]
    assert v["outcome"] == "inconclusive"
    det = g["detectable"]["holds"]
    assert 0 < det["mde"] < 0.2 and det["rows_needed"] > 106
    assert g["detectable"]["drops"]["rows_needed"] is None     # observed on the holds side
    t = v["ood_tests"][0]
    assert t["improved"] and t["detectable"]["mde"] < t["delta"]
    text = "\n".join(v["power"])
    assert f"gold_106 would need about {det['rows_needed']:,} rows" in text
    assert "benchmark: an improvement of" in text


def _repeats(a, gold_deltas, oof_deltas=None, bench_deltas=None):
    """Repeat summaries (first seed first) with the given first -> last point changes."""
    for k, sign in ((0, 0), (3, 1)):
        a.records[k]["repeats"] = [
            {"seed": i, "metrics": {"gold_106": {"auroc": 0.95 + sign * dg},
                                    "benchmark": {"auroc": 0.5 + sign * (bench_deltas or
                                                                         [0.4] * 9)[i]}},
             **({"oof_train_auroc": 0.96 + sign * oof_deltas[i]} if oof_deltas else {})}
            for i, dg in enumerate(gold_deltas)]
    return a


def test_a_holds_call_that_flips_across_seeds_is_not_decisive():
    rng = np.random.default_rng(25)
    sets = {"gold_106": _gold(rng, 0.95, 0.95, rho=0.6), "benchmark": _bench(rng, 0.5, 0.9)}
    agree = _repeats(_add_oof(make_analysis(sets), rng, 0.96, 0.958), [0.0, -0.01, 0.01],
                     [-0.002, -0.004, -0.001])
    v = verdict.decide(agree)
    assert v["outcome"] == "diversity_helps" and v["repeat_calls"]["agree"], v["reasons"]
    flip = _repeats(_add_oof(make_analysis(sets), np.random.default_rng(25), 0.96, 0.958),
                    [0.0, -0.01, 0.01], [-0.002, -0.004, -0.03])
    v = verdict.decide(flip)
    rc = v["repeat_calls"]["in_distribution"]
    assert rc["call"] == "holds" and not rc["agree"]
    assert v["outcome"] == "inconclusive" and any("flip" in r for r in v["reasons"])
    assert v["next_steps"] == verdict.NEXT_STEPS["repeats_flip"]
    # repeats written without the out-of-fold AUROC: not checked, not a flip
    old = _repeats(_add_oof(make_analysis(sets), np.random.default_rng(25), 0.96, 0.958),
                   [0.0, -0.01, 0.01])
    v = verdict.decide(old)
    assert v["repeat_calls"]["in_distribution"]["agree"] is None
    assert v["outcome"] == "diversity_helps" and any("not checked" in r for r in v["reasons"])


def test_an_ood_improvement_that_flips_across_seeds_is_not_decisive():
    rng = np.random.default_rng(26)
    sets = {"gold_106": _gold(rng, 0.95, 0.95, rho=0.6), "benchmark": _bench(rng, 0.5, 0.9)}
    a = _repeats(_add_oof(make_analysis(sets), rng, 0.96, 0.958), [0.0, 0.0, 0.0],
                 [-0.002, -0.002, -0.002], bench_deltas=[0.4, 0.2, -0.05])
    v = verdict.decide(a)
    assert not v["repeat_calls"]["ood"]["benchmark"]["agree"]
    assert v["outcome"] == "inconclusive" and v["claims_ood_improvement"]


@pytest.mark.parametrize("conflict, call", [(0.0, "holds"),
                                            pytest.param(2.0, "drops", marks=pytest.mark.slow)])
def test_demo_end_to_end_in_distribution_call_matches_its_fresh_sample(conflict, call,
                                                                      tmp_path):
    """A quarter-size planted demo (2,048 features; a small in-distribution loss) and a
    trade-off one (--conflict 2):
    the verdict's in-distribution call is decisive, and the probes' true change on 4,000
    fresh rows of gold_106's distribution is on the side it says."""
    from sklearn.metrics import roc_auc_score
    from sweeplib import analysis, demo_fresh
    cache, out = tmp_path / "cache", tmp_path / "res"
    demo.generate(cache, scale=0.25, n_features=2048, seed=0, verbose=False, conflict=conflict)
    demo_fresh.generate(cache, 4000, seed=0, n_features=2048, layers=[40])
    assert run_all.main(["--cache-dir", str(cache), "--results-dir", str(out)]
                        + FAST_FLAGS) == 0
    v = json.loads((out / "verdict.json").read_text())
    g = v["in_distribution"]
    assert g["basis"] == "combined" and g[call], (g["one_sided_lower"], g["one_sided_upper"])
    a = analysis.analyze(out, controls=False)
    X, y = demo_fresh.load(cache)
    auc = [roc_auc_score(y, demo_fresh.probe_scores(a.scores[k]["_probe"], X)) for k in (0, 3)]
    truth = auc[1] - auc[0]
    assert (truth > -g["tolerance"]) if call == "holds" else (truth < -g["tolerance"]), truth
    report = (out / "report.txt").read_text()
    assert "what the tests could detect" in report and "with 80 % power" in report

# ---- the answer: data, method, both, neither (cause.decide) ------------------------------
from sweeplib import cause  # noqa: E402


def _answer(a, arms):
    """(answer, evidence) of a hand-made analysis with method arms at step 0: arms = {name:
    {set: (pos, neg)}}, each set's rows those of the reference's scores there."""
    a.verdict = verdict.decide(a)
    mr = cause.MethodResults({}, ["lr"] + list(arms))
    for name, sets in arms.items():
        for s, (pos, neg) in sets.items():
            mr.estimates[(name, 0, s)] = intervals.auroc_estimate(pos, neg)
    return cause.decide(a, mr, verdict.Criteria())


def _arm(rng, auc, n, base=None, rho=0.5):
    """Scores of an arm on a set's rows, correlated with the reference's noise `base`."""
    return _scores(rng, *n, auc, base, rho)


def _case(seed, bench=(0.5, 0.5), gold=(0.97, 0.97)):
    """A hand-made analysis (gold_106, benchmark) and the shared per-row noise of each set."""
    rng = np.random.default_rng(seed)
    g, b = _gold(rng, *gold, rho=0.95), _bench(rng, *bench)
    a = make_analysis({"gold_106": g, "benchmark": b})
    return rng, a, g, b


def _same_gold(g):
    """An arm's gold_106 scores: the reference's at step 0 (no in-distribution change)."""
    return g["scores"][0]


def test_a_method_that_fixes_step_0_is_a_method_problem():
    rng, a, g, b = _case(10)
    arms = {"massmean": {"benchmark": _arm(rng, 0.9, (100, 350)), "gold_106": _same_gold(g)}}
    ans, ev = _answer(a, arms)
    assert ans == "method", ev
    t = ev["method_effect"]["best"]
    assert t["claimed"] and t["above_chance"] and t["in_distribution"]["status"] == "holds"
    assert not ev["data_effect"]["shown"]
    assert cause.sentence(ans, ev).startswith("a method problem: ")


def test_data_and_method_together_are_both_and_data_alone_is_data():
    rng, a, g, b = _case(11, bench=(0.5, 0.9))
    fix = {"massmean": {"benchmark": _arm(rng, 0.9, (100, 350)), "gold_106": _same_gold(g)}}
    assert _answer(a, fix)[0] == "both"
    rng, a, g, b = _case(11, bench=(0.5, 0.9))
    none = {"massmean": {"benchmark": _arm(rng, 0.5, (100, 350)), "gold_106": _same_gold(g)}}
    ans, ev = _answer(a, none)
    assert ans == "data" and "in-distribution: holds" in cause.sentence(ans, ev)


def test_neither_when_no_arm_beats_the_reference():
    rng, a, g, b = _case(12)
    arms = {m: {"benchmark": _arm(rng, 0.5, (100, 350)), "gold_106": _same_gold(g)}
            for m in ("massmean", "ksparse")}
    ans, ev = _answer(a, arms)
    assert ans == "neither" and len(ev["method_effect"]["tests"]) == 2


def _modest_arm():
    """A case and an arm whose gain over the reference has 0.01 < p < 0.03 unadjusted (the
    first seed that gives one)."""
    for seed in range(200):
        rng, a, g, b = _case(seed)
        base = (rng.normal(size=100), rng.normal(size=350))
        ref = _arm(rng, 0.5, (100, 350), base, 0.5)
        arm = _arm(rng, 0.62, (100, 350), base, 0.5)
        a.estimates[(0, "benchmark")]["auroc"] = intervals.auroc_estimate(*ref)
        p = intervals.change(intervals.auroc_estimate(*ref), intervals.auroc_estimate(*arm))
        if 0.01 < p["p_value"] < 0.03 and p["delta"] > 0 and intervals.interval(
                intervals.auroc_estimate(*arm))[0] > 0.5:
            return a, g, arm
    raise AssertionError("no seed gives a modest gain")


def test_the_method_family_is_holm_adjusted():
    a, g, arm = _modest_arm()
    alone = {"massmean": {"benchmark": arm, "gold_106": _same_gold(g)}}
    assert _answer(a, alone)[0] == "method"
    # the same gain found among eight arms searched on the same rows is not a claim
    many = {f"m{i}": {"benchmark": arm, "gold_106": _same_gold(g)} for i in range(8)}
    ans, ev = _answer(a, many)
    assert ans == "neither", ev
    tests = ev["method_effect"]["tests"]
    assert all(t["p_value"] < 0.05 and t["p_adjusted"] >= 0.05 for t in tests)


def test_a_method_below_chance_or_giving_up_gold_claims_nothing():
    rng, a, g, b = _case(13, bench=(0.1, 0.1))          # the reference is inverted
    weak = {"massmean": {"benchmark": _arm(rng, 0.45, (100, 350)), "gold_106": _same_gold(g)}}
    ans, ev = _answer(a, weak)
    t = ev["method_effect"]["tests"][0]
    assert ans == "neither" and t["beats_reference"] and not t["above_chance"]
    rng, a, g, b = _case(14)
    worse_gold = _scores(rng, 51, 55, 0.75)
    drop = {"massmean": {"benchmark": _arm(rng, 0.9, (100, 350)), "gold_106": worse_gold}}
    ans, ev = _answer(a, drop)
    t = ev["method_effect"]["tests"][0]
    assert ans == "neither" and t["beats_reference"] and t["in_distribution"]["status"] == "drops"


def test_a_failed_premise_or_no_arm_is_inconclusive():
    rng, a, g, b = _case(15, gold=(0.55, 0.55))         # gold_106 near chance: premise fails
    arms = {"massmean": {"benchmark": _arm(rng, 0.95, (100, 350)), "gold_106": _same_gold(g)}}
    ans, ev = _answer(a, arms)
    assert ans == "inconclusive" and "base_probe_above_chance" in ev["reasons"][0]
    rng, a, g, b = _case(16, bench=(0.5, 0.9))
    a.verdict = verdict.decide(a)
    ans, ev = cause.decide(a, None, verdict.Criteria())
    assert ans == "inconclusive" and "not tested" in ev["reasons"][0]
