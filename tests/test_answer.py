"""answer.py: the block that says the verdict first, in the question's words."""
import copy

import pytest

from sweeplib import analysis, answer


@pytest.fixture(scope="module")
def tiny(tiny_run):
    """The analysis of the tiny sweep (its verdict is edited per test on a copy)."""
    return analysis.analyze(tiny_run)


def with_verdict(result, **changes):
    """A copy of the analysis whose verdict has the given keys replaced; without the method
    half's answer (cause.py) unless given, so the outcome's own wording is what is read."""
    r = copy.copy(result)
    v = {k: val for k, val in copy.deepcopy(result.verdict).items()
         if k not in ("answer", "answer_sentence", "answer_evidence")}
    r.verdict = {**v, **changes}
    return r


def gold(holds=False, drops=False, lower=-0.05, upper=0.01, tol=0.02):
    """An in-distribution test as verdict.py writes it."""
    return {"value_from": 0.98, "value_to": 0.97, "delta": -0.01, "ci": [-0.04, 0.01],
            "one_sided_lower": lower, "one_sided_upper": upper, "tolerance": tol,
            "holds": holds, "drops": drops}


def ood(improved=True, p=1e-6):
    """An OOD test as verdict.py writes it."""
    return {"set": "benchmark", "metric": "auroc", "step_from": 0, "step_to": 3,
            "value_from": 0.5, "value_to": 0.9, "delta": 0.4, "ci": [0.3, 0.5],
            "p_adjusted": p, "improved": improved, "degraded": False}


@pytest.mark.parametrize("outcome,word", [("diversity_helps", "data"),
                                          ("trade_off", "data, at a cost in distribution"),
                                          ("no_improvement", "method"),
                                          ("inconclusive", "cannot tell")])
def test_each_outcome_is_said_in_the_question_s_words(tiny, outcome, word):
    r = with_verdict(tiny, outcome=outcome, ood_tests=[ood(outcome != "no_improvement")],
                     in_distribution=gold(holds=outcome == "diversity_helps",
                                          drops=outcome == "trade_off"))
    r.verdict["premises"] = [p | {"passed": True} for p in r.verdict["premises"]]
    text = answer.render_answer(answer.answer(r))
    assert text.startswith(f"ANSWER: {word}") and f"({outcome})" in text.splitlines()[0]
    assert "benchmark AUROC 0.500 -> 0.900" in text and "gold_106 AUROC 0.980 -> 0.970" in text


def test_the_verdict_s_own_answer_and_sentence_are_read_first(tiny):
    r = with_verdict(tiny, answer="both", answer_sentence="Both data and method matter.")
    text = answer.render_answer(answer.answer(r))
    assert text.startswith("ANSWER: both") and "Both data and method matter." in text
    r = with_verdict(tiny, answer={"answer": "neither", "sentence": "Neither explains it."})
    assert answer.render_answer(answer.answer(r)).startswith("ANSWER: neither")


def test_a_bound_next_to_the_tolerance_is_a_borderline_caveat(tiny):
    near = with_verdict(tiny, outcome="diversity_helps", ood_tests=[ood()],
                        in_distribution=gold(holds=True, lower=-0.01996))
    far = with_verdict(tiny, outcome="diversity_helps", ood_tests=[ood()],
                       in_distribution=gold(holds=True, lower=-0.005))
    assert any(c.startswith("borderline: gold_106") for c in answer.answer(near).caveats)
    assert not any(c.startswith("borderline") for c in answer.answer(far).caveats)


def test_a_failed_premise_leads_and_its_next_command_fixes_it(tiny):
    r = with_verdict(tiny, outcome="inconclusive")
    r.verdict["premises"] = [p | {"passed": p["name"] != "in_distribution_not_leaked"}
                             for p in r.verdict["premises"]]
    a = answer.answer(r)
    assert a.rests_on[0].startswith("premise failed: in_distribution_not_leaked")
    assert "--dedup-split" in a.next[0][1] and a.next[0][1].split()[1].endswith("run_all.py")
    assert "in_distribution_not_leaked" in a.sentence


def test_commands_stay_within_100_columns_and_paste_as_one_line():
    cmd = "python run_all.py " + " ".join(f"--flag-{i} /some/long/path/{i}" for i in range(12))
    lines = answer._command_lines(cmd)
    assert len(lines) > 1 and max(map(len, lines)) <= 96
    assert all(x.endswith(" \\") for x in lines[:-1])
    assert " ".join(x.rstrip(" \\").strip() for x in lines) == cmd
