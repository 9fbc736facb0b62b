"""The answer first: a short block, in the question's own words, that the console, the report
and `run_all.py --quiet` all print before any detail.

    a = answer(result)          # an Answer, from the verdict of an analysis (analysis.py)
    text = render_answer(a)     # the block: ANSWER line, what it rests on, caveats, next

The verdict decides (verdict.py); this module only says it. It reads the verdict's own `answer`
(data / method / both / neither / inconclusive) and one-sentence answer when the verdict has
them, else words the outcome. Caveats and next commands come from small rules (CAVEATS,
NEXT_FOR_PREMISE): one more rule is one more line of the block.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import common
from sweeplib import analysis, hints, solver_check, verdict
from sweeplib.console import printable
from sweeplib.render import Section, wrap

QUESTION = "Is the probe's OOD failure a data problem or a method problem?"
WORDS = {"diversity_helps": "data", "trade_off": "data, at a cost in distribution",
         "no_improvement": "method (or too few rows to see a change)",
         "inconclusive": "cannot tell"}
BORDERLINE = 0.1            # a bound within this share of the tolerance from it is borderline
CANNOT_FIT = 0.6            # a first step's CV AUROC below this: the probe fits nothing


@dataclass
class Answer:
    """What the block says: the answer word, its sentence, the evidence it rests on, the
    caveats, and the commands to run next (text, command line)."""
    word: str
    outcome: str
    sentence: str
    rests_on: list = field(default_factory=list)
    caveats: list = field(default_factory=list)
    next: list = field(default_factory=list)


def answer(result):
    """The Answer of an analysed results folder (None without a verdict)."""
    v = result.verdict
    if not v:
        return None
    word, sentence = _verdict_words(v)
    sentence = sentence[:1].upper() + sentence[1:] if sentence else sentence
    return Answer(word=word or WORDS[v["outcome"]], outcome=v["outcome"],
                  sentence=sentence or _sentence(v), rests_on=_cannot_fit(result) + _rests_on(v),
                  caveats=[c for rule in CAVEATS for c in rule(result, v)],
                  next=_next(result, v)[:3])


def _verdict_words(v):
    """(answer word, sentence) the verdict gives itself, else (None, None)."""
    a = v.get("answer")
    if isinstance(a, dict):
        return a.get("answer") or a.get("word"), a.get("sentence") or a.get("text")
    return (a if isinstance(a, str) else None), v.get("answer_sentence")


def _sentence(v):
    """One sentence saying the outcome in the question's terms."""
    tests, gold = v["ood_tests"], v["in_distribution"]
    better = ", ".join(t["set"] for t in tests if t["improved"]) or "none"
    tried = ", ".join(t["set"] for t in tests) or "none"
    tol = v["criteria"]["gold_tolerance"]
    if v["outcome"] == "diversity_helps":
        return (f"Adding diverse training data makes {better} recover while gold_106 holds "
                f"within {tol}: the OOD failure was a data problem.")
    if v["outcome"] == "trade_off":
        return (f"Diverse data makes {better} recover, but gold_106 drops by more than {tol}: "
                "data fixes OOD at a cost in distribution.")
    if v["outcome"] == "no_improvement":
        return (f"No OOD set that measures intent ({tried}) improves as sources are added: the "
                "failure looks like a method problem, unless the sets are too small to show it.")
    failed = [p["name"] for p in v["premises"] if not p["passed"]]
    if failed:
        return (f"A premise fails ({', '.join(failed)}): the data cannot answer the question "
                "as asked until it is fixed.")
    if gold:
        return (f"OOD improves ({better}), but gold_106's change is too uncertain to say "
                f"whether it stays within {tol}.")
    return "The data cannot answer the question as asked (see the reasons below)."


def _rests_on(v):
    """The two or three numbers the answer rests on."""
    out = [f"premise failed: {p['name']}: {p['detail']}" for p in v["premises"]
           if not p["passed"]][:3]
    tests = [t for t in v["ood_tests"] if t["improved"]] or v["ood_tests"]
    for t in tests[:2]:
        out.append(f"{t['set']} {common.METRIC_LABELS.get(t['metric'], t['metric'])} "
                   f"{t['value_from']:.3f} -> {t['value_to']:.3f} (step {t['step_from']} -> "
                   f"{t['step_to']}): {t['delta']:+.3f} [{t['ci'][0]:+.3f}, {t['ci'][1]:+.3f}]"
                   f", Holm-adjusted p {t['p_adjusted']:.2g}: "
                   + ("improved" if t["improved"] else "degraded" if t["degraded"]
                      else "no clear change"))
    g = v["in_distribution"]
    if g:
        tol = g["tolerance"]
        test = (f"one-sided lower bound {g['one_sided_lower']:+.5f} > -{tol}: holds"
                if g["holds"] else
                f"one-sided upper bound {g['one_sided_upper']:+.5f} < -{tol}: drops"
                if g["drops"] else
                f"one-sided bounds {g['one_sided_lower']:+.5f} to {g['one_sided_upper']:+.5f} "
                f"straddle -{tol}: neither holding nor dropping is shown")
        basis = g.get(g.get("basis")) if isinstance(g.get(g.get("basis")), dict) else {}
        on = f" (decided on {basis['label']})" if basis.get("label") else ""
        out.append(f"gold_106 AUROC {g['value_from']:.3f} -> {g['value_to']:.3f}: "
                   f"{g['delta']:+.3f} [{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}]; {test}{on}")
    return out


def _cannot_fit(result):
    """A first step whose probe cannot rank its own training data out of fold."""
    first = next((p for p in result.progression), None)
    if first is None or first["cv_mean"] >= CANNOT_FIT:
        return []
    return [f"the probe cannot fit its own training data (step {first['step']}'s CV AUROC "
            f"{first['cv_mean']:.3f}, chance 0.5): check the labels, the features and the "
            "layer before reading anything else"]


def _duplicated_sets(result):
    """[(eval set, share of its held-out rows with an exact duplicate in a training part)]
    of the sets where that share reaches the verdict's limit (the leakage audit)."""
    limit, out = verdict.Criteria().max_duplicate_share, []
    for name in result.sets:
        pairs = [p for p in (result.audit or {}).get("pairs", []) if p["eval"] == name]
        exact = sum(p["exact"] for p in pairs)
        if pairs and pairs[0]["n_eval"] and exact / pairs[0]["n_eval"] >= limit:
            out.append((name, min(1.0, exact / pairs[0]["n_eval"])))
    return out


# --------------------------------------------------------------------------------------------
# Caveats: each rule returns a list of lines (none when it does not apply)
# --------------------------------------------------------------------------------------------
def _borderline(result, v):
    """A bound or p-value the answer turns on, close to its threshold."""
    out, g = [], v["in_distribution"]
    if g and (g["holds"] or g["drops"]):
        bound = g["one_sided_lower"] if g["holds"] else g["one_sided_upper"]
        if abs(bound + g["tolerance"]) < BORDERLINE * g["tolerance"]:
            out.append(f"borderline: gold_106's one-sided bound {bound:+.5f} is "
                       f"{abs(bound + g['tolerance']):.5f} from -{g['tolerance']}; another "
                       "seed or stopping point can change the answer")
    for t in v["ood_tests"]:
        if t["improved"] and t["p_adjusted"] > v["criteria"]["alpha"] / 5:
            out.append(f"borderline: {t['set']}'s improvement has Holm-adjusted p "
                       f"{t['p_adjusted']:.2g} (needs < {v['criteria']['alpha']:g})")
    return out


def _solver(result, v):
    """Where the solver stopped, and whether the answer was checked at the optimum."""
    check = v.get("solver_check")
    if check:
        same = check["default_outcome"] == check["tight_outcome"]
        return [f"solver check: {check['default_outcome']} at the default tolerance, "
                f"{check['tight_outcome']} with every fit run to tol {check['tol']:g}"
                + ("" if same else ": the answer depends on where the solver stops")]
    steps = analysis.solver_summary(result)["steps"]
    bounds = [b for st in steps.values()
              if (b := solver_check.excess_bound(st["final"])) is not None]
    if not bounds or max(bounds) < 0.1:
        return []
    return [f"every fit stopped by the tolerance (--tol {result.config.get('tol', 1e-4):g}), up "
            f"to {max(bounds):.0%} above its optimum (a guaranteed bound, loose); whether the "
            "answer holds at the optimum: --solver-check"]


def _cautions(result, v):
    """The verdict's own cautions: repeated seeds, degraded sets."""
    return [r for r in v["reasons"] if r.startswith(("caution:", "repeated seeds:", "note:"))]


def _left_out(result, v):
    """OOD sets the verdict could not use."""
    if not v["sets_excluded"]:
        return []
    return ["not used: " + "; ".join(f"{x['set']} ({x['reason'].split(':')[0]})"
                                     for x in v["sets_excluded"])]


def _synthetic(result, v):
    """Demo data says how the tool behaves, never what is true."""
    return (["synthetic demo data: this shows how the tool behaves, not a finding"]
            if result.data_source == "demo" else [])


CAVEATS = [_borderline, _solver, _cautions, _left_out, _synthetic]


# --------------------------------------------------------------------------------------------
# What to run next: commands that run as pasted
# --------------------------------------------------------------------------------------------
def _run(result, *flags, folder=None):
    """run_all.py with the folder's own flags (its recorded config), then flags."""
    where = Path(result.results_dir) if folder is None else folder
    return hints.command("run_all.py", *hints.flags_of(result.config, result.data_source),
                         "--results-dir", where, *flags)


def _elsewhere(result, suffix):
    """A sibling results folder for a run whose config differs from this folder's."""
    here = Path(result.results_dir)
    return here.with_name(f"{here.name}_{suffix}")


NEXT_FOR_PREMISE = {
    "in_distribution_not_leaked": ("keep duplicate rows on one side of the split",
                                   ("--dedup-split",), "dedup"),
    "ood_set_measures_intent": ("keep duplicate rows on one side of the split",
                                ("--dedup-split",), "dedup"),
    "fits_converged": ("let the fits converge", ("--max-iter", "10000"), "max_iter"),
    "two_steps": ("run the sweep's steps", ("--steps", "0", "1", "2", "3", "--resume"), None),
}


def _next(result, v):
    """(why, command) pairs, most useful first."""
    failed = [p["name"] for p in v["premises"] if not p["passed"]]
    out = []
    dup = _duplicated_sets(result)
    if dup and not result.config.get("dedup_split"):
        out.append((", ".join(f"{n}: {s:.0%}" for n, s in dup) + " of the held-out rows "
                    "duplicate training rows exactly: keep duplicates on one side of the split",
                    _run(result, "--dedup-split", folder=_elsewhere(result, "dedup"))))
    for name in failed:
        if name in NEXT_FOR_PREMISE and not (dup and "--dedup-split" in NEXT_FOR_PREMISE[name][1]):
            why, flags, suffix = NEXT_FOR_PREMISE[name]
            out.append((why, _run(result, *flags, folder=suffix and _elsewhere(result, suffix))))
        elif name == "base_probe_above_chance":
            out.append(("the base probe does not rank gold_106: check labels, features and "
                        "layer (another layer, as a grid)", _run(result, "--layers", "16", "31",
                                                                  "40", "53")))
    if failed:
        return out
    controls = [f for f, present in (("--solver-check", v.get("solver_check")),
                                     ("--budget base", (result.arms or {}).get("arm_budget")),
                                     ("--baseline format",
                                      (result.arms or {}).get("baseline_format")))
                if not present]
    if v["outcome"] == "no_improvement":
        out.append(("other layers and regularization strengths, as a grid",
                    _run(result, "--layers", "16", "31", "40", "53")))
    if v["outcome"] == "trade_off":
        out.append(("weigh the sources equally",
                    _run(result, "--source-weight", "equal",
                         folder=_elsewhere(result, "equal_sources"))))
    if controls:
        out.append(("the controls: more data or more diverse data, format or intent, solver",
                    _run(result, "--resume", *" ".join(controls).split())))
    if result.config.get("repeats", 1) < 5:
        seeds = ("more seeds", _run(result, "--repeats", "5",
                                    folder=_elsewhere(result, "repeats5")))
        out.insert(0, seeds) if v["outcome"] == "inconclusive" else out.append(seeds)
    return out


# --------------------------------------------------------------------------------------------
# The block
# --------------------------------------------------------------------------------------------
def render_answer(a):
    """The answer block as plain text (commands on their own indented lines, never wrapped)."""
    if a is None:
        return "ANSWER: none (no verdict: the folder holds a control, not the sweep)\n"
    lines = [f"ANSWER: {a.word}  ({a.outcome})", f"{QUESTION} {a.sentence}", "",
             "rests on:"] + [f"- {r}" for r in a.rests_on]
    if a.caveats:
        lines += ["", "caveats:"] + [f"- {c}" for c in a.caveats]
    if a.next:
        lines += ["", "next:"]
        for why, cmd in a.next:
            lines += [f"- {why}:"] + _command_lines(cmd)
    lines += ["", "Details follow; verdict.json holds the verdict for programs."]
    return wrap("\n".join(lines)) + "\n"


def _command_lines(cmd, width=96):
    """A command as lines of at most `width` columns, indented by four spaces, continued with
    a backslash: it pastes into a shell as one command and is never re-wrapped. A word with
    control characters (a hostile path) is shown escaped, never raw."""
    lines, line = [], "   "
    for word in (shlex.quote(printable(w)) for w in shlex.split(cmd)):
        if len(line) + 1 + len(word) > width - 2 and line.strip():
            lines.append(line + " \\")
            line = "       "
        line += " " + word
    return lines + [line]


def answer_section(result):
    """The answer as the report's first section (the block the console and --quiet print)."""
    return Section("Answer", [render_answer(answer(result)).rstrip("\n")])
