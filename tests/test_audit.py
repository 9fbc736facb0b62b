"""The leakage audit of a run (audit.py): made once, before the fits, its lines logged when
the records use it; taken from the results folder's records on a repeat run on the same
inputs and split, recomputed when a record is damaged or was made otherwise."""
import json
import shutil

import pytest

import common
import run_all
from conftest import FAST_FLAGS
from sweeplib import audit, base, config, duplicates, pipeline
from sweeplib.splits import make_splits


def spy_audits(monkeypatch):
    """Count the audits computed from here on (duplicates.leakage_audit calls)."""
    calls, real = [], duplicates.leakage_audit

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(duplicates, "leakage_audit", spy)
    return calls


def records(folder):
    """The leakage audit of every step record in a folder."""
    return [json.loads(p.read_text())["leakage_audit"] for p in sorted(folder.glob("step_*.json"))]


def test_the_audit_is_made_once_and_its_lines_logged_when_used(tiny_cache, tmp_path):
    args = config.build_parser("t").parse_args(["--cache-dir", str(tiny_cache), "--quiet",
                                                "--no-sidecar"])
    logged = []
    with pipeline.prepare(config.RunConfig.from_args(args), [common.STEPS[3]]) as ctx:
        ctx.log = logged.append
        assert ctx.audit is None                   # made with the first fits, not before
        ctx.start_audit(tmp_path)                  # an empty folder: nothing cached
        splits = make_splits(ctx.datasets, args.eval_fraction, args.seed)
        lines = []
        direct = duplicates.leakage_audit(ctx.datasets, splits, args.near_dup_threshold,
                                          lines.append)
        assert logged == [] and lines
        assert ctx.leakage_audit() == direct and ctx.leakage_audit() is ctx.audit
        assert logged == lines                     # once, however often it is used


def test_a_repeat_run_on_the_same_inputs_takes_the_audit_from_the_records(
        tiny_cache, tiny_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "res"
    shutil.copytree(tiny_run, out)
    before = records(out)
    calls = spy_audits(monkeypatch)
    assert run_all.main(["--cache-dir", str(tiny_cache), "--results-dir", str(out)]
                        + FAST_FLAGS) == 0
    assert calls == [] and records(out) == before and before[0]["pairs"]
    warned = [ln for ln in capsys.readouterr().err.splitlines() if "leakage audit" in ln]
    assert warned == duplicates.audit_warnings(before[0])          # the same lines, from it
    # another threshold, or a damaged record next to good ones: the audit is computed
    assert run_all.main(["--cache-dir", str(tiny_cache), "--results-dir", str(out),
                         "--near-dup-threshold", "0.97"] + FAST_FLAGS) == 0
    assert calls == [1] and all(a["threshold"] == 0.97 for a in records(out))


@pytest.mark.parametrize("damage", ["truncated", "other inputs", "other seed", "no audit"])
def test_a_record_that_does_not_match_is_not_used(tiny_cache, tiny_run, tmp_path, damage):
    out = tmp_path / "res"
    shutil.copytree(tiny_run, out)
    args = config.build_parser("t").parse_args(["--cache-dir", str(tiny_cache), "--quiet",
                                                "--no-sidecar"])
    with pipeline.prepare(config.RunConfig.from_args(args), [common.STEPS[0]],
                          audit=False) as ctx:
        want = audit.key(ctx)
    assert audit.cached(out, want) == records(out)[0]             # the records hold it
    for path in out.glob("step_*.json"):
        record = json.loads(path.read_text())
        if damage == "truncated":
            path.write_text(path.read_text()[:100])
            continue
        if damage == "other inputs":
            record["inputs"] = {k: "0" * 64 for k in record["inputs"]}
        elif damage == "other seed":
            record["config"]["seed"] += 1
        else:
            del record["leakage_audit"]
        path.write_text(json.dumps(record))
    assert audit.cached(out, want) is None


def test_an_error_in_the_audit_is_raised_as_it_is(tiny_cache, monkeypatch):
    def fail(*args, **kwargs):
        raise base.InputError("planted: audit failed")
    monkeypatch.setattr(duplicates, "leakage_audit", fail)
    args = config.build_parser("t").parse_args(["--cache-dir", str(tiny_cache), "--quiet",
                                                "--no-sidecar"])
    with pipeline.prepare(config.RunConfig.from_args(args), [common.STEPS[0]]) as ctx:
        with pytest.raises(base.InputError, match="planted: audit failed"):
            ctx.leakage_audit()


def test_resume_with_every_step_up_to_date_starts_no_audit(tiny_cache, tiny_run, tmp_path,
                                                           monkeypatch):
    out = tmp_path / "res"
    shutil.copytree(tiny_run, out)
    started, real = [], audit.run
    monkeypatch.setattr(audit, "run", lambda *a, **k: started.append(1) or real(*a, **k))
    assert run_all.main(["--cache-dir", str(tiny_cache), "--results-dir", str(out),
                         "--resume"] + FAST_FLAGS) == 0
    assert started == []
