import json
import os

import pytest

from fmbook import claims

TOML = """
loss = { kind = "result", description = "a loss", test = { max = 2.0 }, full = { max = 1.0 } }
acc = { kind = "result", test = { min = 0.5, max = 1.0 }, full = { min = 0.9, max = 1.0 } }
"""


def demo_notebook(tmp_path, monkeypatch, toml: str) -> claims.Notebook:
    """Notebook "demo" at the test budget, its thresholds file ``toml``, its records in
    tmp_path/out."""
    monkeypatch.setenv("FMBOOK_CLAIMS_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("FMBOOK_BUDGET", "test")
    (tmp_path / "demo.claims.toml").write_text(toml)
    return claims.notebook("demo", folder=tmp_path)


@pytest.fixture
def nb(tmp_path, monkeypatch):
    return demo_notebook(tmp_path, monkeypatch, TOML)


def test_record_writes_json_and_check_passes(nb, tmp_path):
    claims.record("loss", 1.5, "nats")
    nb.record("acc", 0.75, "fraction")
    doc = json.loads((tmp_path / "out" / "demo.test.json").read_text())
    assert doc["budget"] == "test" and doc["notebook"] == "demo"
    assert doc["claims"]["loss"]["value"] == 1.5 and doc["claims"]["loss"]["unit"] == "nats"
    results = claims.check()
    assert all(r.ok for r in results) and {r.name for r in results} == {"loss", "acc"}


def test_check_fails_out_of_bounds(nb):
    nb.record("loss", 2.5)
    nb.record("acc", 0.75)
    with pytest.raises(AssertionError, match="FAIL loss = 2.5"):
        nb.check()
    assert [r.ok for r in nb.check(raise_on_failure=False)] == [True, False]


def test_check_fails_when_a_threshold_was_not_measured_or_a_claim_has_none(nb):
    nb.record("loss", 1.0)
    with pytest.raises(AssertionError, match="entries never measured: acc"):
        nb.check()
    nb.record("acc", 0.8)
    nb.record("extra", 3.0)
    with pytest.raises(AssertionError, match="without an entry.*extra"):
        nb.check()


def test_full_budget_uses_its_own_bounds(nb, monkeypatch):
    monkeypatch.setenv("FMBOOK_BUDGET", "full")
    full = claims.notebook("demo", folder=nb.folder)
    full.record("loss", 1.5)
    full.record("acc", 0.95)
    with pytest.raises(AssertionError, match="FAIL loss"):
        full.check()


@pytest.mark.parametrize(
    ("name", "value", "error", "match"),
    [
        ("bad name", 1.0, ValueError, "letters, digits"),
        ("loss", "high", TypeError, "must be a number"),
        ("loss", float("nan"), ValueError, "must be finite"),
    ],
)
def test_record_rejects_bad_input(nb, name, value, error, match):
    with pytest.raises(error, match=match):
        nb.record(name, value)


def test_bad_thresholds_file(tmp_path):
    (tmp_path / "x.claims.toml").write_text('[loss]\nkind = "result"\nfull = { max = 1 }\n')
    with pytest.raises(ValueError, match="no entry for budget 'test'"):
        claims.load_thresholds(tmp_path / "x.claims.toml", "test")
    (tmp_path / "y.claims.toml").write_text('[loss]\nkind = "result"\ntest = { below = 1 }\n')
    with pytest.raises(ValueError, match="'min' and/or 'max'"):
        claims.load_thresholds(tmp_path / "y.claims.toml", "test")
    (tmp_path / "k.claims.toml").write_text("[loss]\ntest = { max = 1 }\n")
    with pytest.raises(ValueError, match='needs kind = "result" or "machine"'):
        claims.load_thresholds(tmp_path / "k.claims.toml", "test")
    (tmp_path / "r.claims.toml").write_text('[loss]\nkind = "result"\ntest = { reference = 1 }\n')
    with pytest.raises(ValueError, match="'min' and/or 'max'"):  # a result has no reference value
        claims.load_thresholds(tmp_path / "r.claims.toml", "test")
    with pytest.raises(FileNotFoundError, match="no thresholds file"):
        claims.load_thresholds(tmp_path / "z.claims.toml", "test")


MACHINE_TOML = (
    TOML
    + """
[train_seconds]
kind = "machine"
description = "wall time of training"
test = { reference = 20.0, max = 30 }
full = { reference = 60.0 }
"""
)


@pytest.fixture
def mnb(tmp_path, monkeypatch):
    return demo_notebook(tmp_path, monkeypatch, MACHINE_TOML)


def test_a_measurement_of_the_machine_never_fails_the_notebook(mnb, tmp_path, capsys):
    mnb.record("loss", 1.5)
    mnb.record("acc", 0.75)
    mnb.measure("train_seconds", 500.0, "s")  # far beyond its target on the reference machine
    results = {r.name: r for r in mnb.check()}
    assert results["train_seconds"].ok and results["train_seconds"].kind == "machine"
    assert results["train_seconds"].reference == 20.0
    out = capsys.readouterr().out
    assert "train_seconds = 500 s here (reference machine: 20 s; its target there <= 30)" in out
    assert "2 of 2 results hold; 1 measurement of this machine" in out
    doc = json.loads((tmp_path / "out" / "demo.test.json").read_text())
    assert doc["claims"]["train_seconds"]["kind"] == "machine"
    assert doc["peak_memory_mib"] > 10  # a Python process with torch imported


def test_a_result_still_fails_beside_measurements(mnb):
    mnb.record("loss", 2.5)
    mnb.record("acc", 0.75)
    mnb.measure("train_seconds", 5.0, "s")
    with pytest.raises(AssertionError, match="FAIL loss"):
        mnb.check()


@pytest.mark.parametrize("wrong", ["record", "measure"])
def test_recording_with_the_other_kind_fails(mnb, wrong):
    mnb.record("acc", 0.75)
    if wrong == "record":  # a wall time recorded as if it were a result
        mnb.record("loss", 1.5)
        mnb.record("train_seconds", 5.0, "s")
        match = "train_seconds was recorded with claims.record but its entry says kind = 'machine'"
    else:  # a result passed off as a measurement, which would never gate
        mnb.measure("loss", 1.5)
        mnb.measure("train_seconds", 5.0, "s")
        match = "loss was recorded with claims.measure but its entry says kind = 'result'"
    with pytest.raises(AssertionError, match=match):
        mnb.check()


def test_a_measurement_without_a_reference_value_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("FMBOOK_CLAIMS_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("FMBOOK_BUDGET", "test")
    (tmp_path / "m.claims.toml").write_text('[t]\nkind = "machine"\ntest = { }\nfull = { }\n')
    nb = claims.notebook("m", folder=tmp_path)
    nb.measure("t", 1.0, "s")
    with pytest.raises(AssertionError, match="t has no reference value"):
        nb.check()


def test_a_quoted_constant_is_glued_without_a_bound(nb, tmp_path, capsys):
    nb.record("loss", 1.5)
    nb.record("acc", 0.75)
    assert nb.quote("steps", 1100, "steps") == 1100.0
    results = nb.check()
    assert {r.name for r in results} == {"loss", "acc"}
    doc = json.loads((tmp_path / "out" / "demo.test.json").read_text())
    assert doc["claims"]["steps"] == {**doc["claims"]["steps"], "value": 1100.0, "kind": "constant"}
    assert "2 of 2 results hold" in capsys.readouterr().out


def test_a_quoted_constant_must_not_also_be_bounded(nb):
    nb.record("acc", 0.75)
    nb.quote("loss", 1.5)
    with pytest.raises(AssertionError, match="quoted constants.*loss"):
        nb.check()


def test_spec_reads_another_notebooks_bound(nb, tmp_path):
    assert claims.spec("demo", "acc", folder=tmp_path).bounds == {"min": 0.5, "max": 1.0}
    with pytest.raises(KeyError, match="no claim 'nope'"):
        claims.spec("demo", "nope", folder=tmp_path)


def test_record_before_notebook_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(claims, "_current", None)
    with pytest.raises(RuntimeError, match="fmbook.claims.notebook"):
        claims.record("x", 1.0)


def test_measured_reads_a_notebooks_claims_and_runs_it_when_missing(tmp_path, monkeypatch):
    import nbformat

    from fmbook import claims

    monkeypatch.setenv("FMBOOK_CLAIMS_DIR", str(tmp_path / "claims"))
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from fmbook import claims\nclaims.notebook('tiny')\n"
            "claims.record('answer', 6 * 7, 'units')\nclaims.check()"
        )
    ]
    nbformat.write(nb, tmp_path / "tiny.ipynb")
    (tmp_path / "tiny.claims.toml").write_text(
        '[answer]\nkind = "result"\ntest = { min = 42, max = 42 }\nfull = { min = 42, max = 42 }\n'
    )
    with pytest.raises(FileNotFoundError, match="no recorded claims"):
        claims.measured("tiny", tmp_path, run_missing=False)
    assert claims.measured("tiny", tmp_path) == {"answer": 42.0}  # ran the notebook
    (tmp_path / "tiny.ipynb").unlink()
    assert claims.measured("tiny", tmp_path) == {"answer": 42.0}  # now from the recorded file
    with pytest.raises(FileNotFoundError, match="no notebook"):
        claims.measured("other", tmp_path)


def test_record_many_and_quote_many_record_each_value(nb, tmp_path):
    assert nb.record_many({"loss": 1.5, "acc": 0.75}) == {"loss": 1.5, "acc": 0.75}
    claims.quote_many({"steps": 300, "width": 64})
    doc = json.loads((tmp_path / "out" / "demo.test.json").read_text())
    assert {k: v["kind"] for k, v in doc["claims"].items()} == {
        "loss": "result",
        "acc": "result",
        "steps": "constant",
        "width": "constant",
    }
    assert all(r.ok for r in nb.check())


def test_in_jupyter_check_shows_a_summary_and_folds_the_table(nb, monkeypatch):
    shown = []
    monkeypatch.setattr(claims, "in_notebook", lambda: True)
    monkeypatch.setattr(claims, "_glue", lambda name, value: None)
    monkeypatch.setattr("IPython.display.display", shown.append)
    nb.record_many({"loss": 1.5, "acc": 0.25})
    with pytest.raises(AssertionError, match="acc"):
        nb.check()
    page = shown[0].data
    summary, table = page.split("<details>")
    assert "1 of 2 results hold" in summary and "acc" in summary  # the failure is not folded away
    assert "loss" in table and "loss" not in summary


def test_a_readers_run_shows_what_moved_and_raises_nothing(nb, monkeypatch, capsys):
    """By hand (no FMBOOK_CLAIMS=strict), a result out of bounds is a line in a table."""
    monkeypatch.delenv("FMBOOK_CLAIMS", raising=False)
    assert not claims.strict()
    nb.record_many({"loss": 2.5, "acc": 0.75})
    results = nb.check()
    assert [r.ok for r in results] == [True, False]
    out = capsys.readouterr().out
    assert "1 of 2 results moved outside the range" in out
    assert "loss: your run 2.5, the book's range at most 2" in out
    nb.record("acc", 1.5)  # both moved; the range in words
    nb.check()
    assert "acc: your run 1.5, the book's range 0.5 to 1" in capsys.readouterr().out


def test_a_readers_run_that_skipped_a_claim_gets_a_note(nb, monkeypatch, capsys):
    monkeypatch.delenv("FMBOOK_CLAIMS", raising=False)
    nb.record("loss", 1.0)
    nb.check()
    assert "note: entries never measured: acc" in capsys.readouterr().out


def test_in_jupyter_a_readers_run_shows_a_table_of_the_results_that_moved(nb, monkeypatch):
    shown = []
    monkeypatch.delenv("FMBOOK_CLAIMS", raising=False)
    monkeypatch.setattr(claims, "in_notebook", lambda: True)
    monkeypatch.setattr(claims, "_glue", lambda name, value: None)
    monkeypatch.setattr("IPython.display.display", shown.append)
    nb.record_many({"loss": 2.93, "acc": 0.75})
    nb.check()
    page = shown[0].data
    assert "<th>your run</th><th>the book's range</th>" in page
    assert "<td>loss</td><td>2.93</td><td>at most 2</td>" in page


def test_strict_is_set_by_the_test_suite_and_read_from_the_environment(monkeypatch):
    assert claims.strict()  # conftest.py, like scripts/test and scripts/build-book
    monkeypatch.setenv("FMBOOK_CLAIMS", "reader")
    assert not claims.strict()


@pytest.mark.parametrize("strict", [False, True])
def test_a_notebook_with_a_changed_setting_runs_to_its_end_by_hand_and_fails_strictly(
    tmp_path, monkeypatch, strict
):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from fmbook import claims\nclaims.notebook('tiny')\n"
            "width = 2 * 21  # the reader doubled a setting\n"
            "claims.record('answer', width * 2, 'units')"
        ),
        nbformat.v4.new_code_cell("claims.check()"),
        nbformat.v4.new_code_cell("print('the end')"),
    ]
    (tmp_path / "tiny.claims.toml").write_text(
        '[answer]\nkind = "result"\ntest = { min = 40, max = 44 }\nfull = { min = 40, max = 44 }\n'
    )
    env = dict(os.environ, FMBOOK_CLAIMS_DIR=str(tmp_path / "claims"))
    env.pop("FMBOOK_CLAIMS") if not strict else env.update(FMBOOK_CLAIMS="strict")
    client = NotebookClient(nb, timeout=120, resources={"metadata": {"path": str(tmp_path)}})
    if strict:
        with pytest.raises(CellExecutionError, match="FAIL answer = 84"):
            client.execute(env=env)
        return
    client.execute(env=env)
    outputs = "".join(
        o.get("text", "") + o.get("data", {}).get("text/html", "")
        for c in nb.cells
        for o in c.outputs
    )
    assert "<td>answer</td><td>84 units</td><td>40 to 44</td>" in outputs
    assert "the end" in outputs


def test_measured_falls_back_on_the_books_run_of_a_notebook_that_is_not_there(
    tmp_path, monkeypatch, capsys
):
    """A reader copy opened alone (on Colab) reads the book's values of another notebook."""
    monkeypatch.setenv("FMBOOK_CLAIMS_DIR", str(tmp_path / "claims"))
    monkeypatch.setenv("FMBOOK_BUDGET", "full")
    with pytest.raises(FileNotFoundError, match="no notebook"):
        claims.measured("elsewhere", tmp_path)
    claims.provide_measured("elsewhere", "full", {"acc": 0.9})
    assert claims.measured("elsewhere", tmp_path) == {"acc": 0.9}
    assert "using the book's own run of it" in capsys.readouterr().out
    monkeypatch.setenv("FMBOOK_BUDGET", "test")  # the book's run was at another budget
    with pytest.raises(FileNotFoundError, match="no notebook"):
        claims.measured("elsewhere", tmp_path)
    with pytest.raises(ValueError, match="budget"):
        claims.provide_measured("elsewhere", "huge", {})


def test_provided_thresholds_are_used_only_where_there_is_no_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FMBOOK_CLAIMS_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("FMBOOK_BUDGET", "test")
    claims.provide("carried", 'x = { kind = "result", test = { max = 1 }, full = { max = 1 } }')
    assert claims.spec("carried", "x", folder=tmp_path).bounds == {"max": 1}
    (tmp_path / "carried.claims.toml").write_text(
        'x = { kind = "result", test = { max = 2 }, full = { max = 2 } }'
    )
    assert claims.spec("carried", "x", folder=tmp_path).bounds == {"max": 2}  # the file wins
    with pytest.raises(ValueError, match="not TOML"):
        claims.provide("broken", "x = [")
