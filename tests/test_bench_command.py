"""The parts of ``python -m fastlstm bench`` that are not timing: the bytes and FLOPs of a shape match the model's
parameters, the fraction of the limit follows from the numbers it is given (the probes of the machine's limits:
test_probes.py), the report (summary, spread, warnings instead of implausible numbers, the plot) says what its
rows say, bad output paths and section names fail before anything runs, the sections (float32, bf16/int8, GRU,
PyTorch models) measure what they say with the peers that are installed and say which are not; and the command
line's --version and --help. Whole runs use tiny shapes and no pauses."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastlstm
from conftest import package_parent, require, run_python
from fastlstm import _bench, _bench_sections, _probes


@pytest.mark.parametrize("shape", _bench.SHAPES, ids=lambda s: s.name.replace(" ", ""))
def test_shape_bytes_and_flops_match_the_model(shape):
    model = fastlstm.LSTM(shape.I, shape.H, shape.layers, bidirectional=shape.bidirectional)
    params = model.state_dict()
    w_hh = [v for k, v in params.items() if k.startswith("weight_hh")]
    w_ih = [v for k, v in params.items() if k.startswith("weight_ih")]
    if shape.streaming:
        assert shape.step_weight_bytes() == 4 * sum(w.size for w in w_hh + w_ih)
    else:  # one layer's W_hh per step, every direction; all layers have the same hidden size
        assert shape.step_weight_bytes() * shape.layers == 4 * sum(w.size for w in w_hh)
    per_step_rows = sum(w.size for w in w_hh + w_ih)  # multiply-adds per row and step, all layers
    assert shape.flops() == 2 * shape.T * shape.B * per_step_rows


def test_limit_fraction_takes_the_slower_limit():
    row = _bench.Row("s", gflop=2.0, weight_gb=3.0, batch=1, read_gbps=100.0, median_ms={"fastlstm": 40.0})
    # FLOPs at 200 GFLOP/s: 10 ms; bytes at 100 GB/s: 30 ms, the slower: 30 / 40
    assert _bench.limit_fraction(row, 200.0) == (30.0 / 40.0, "read")
    # at 50 GFLOP/s the FLOPs take 40 ms: the whole time
    assert _bench.limit_fraction(row, 50.0) == (1.0, "FMA")
    table = _bench.format_table([row], 50.0)
    assert "% of limit" in table.splitlines()[0] and "100% FMA" in table.splitlines()[2]
    assert "% of limit" not in _bench.format_table([row])


def test_limit_fraction_adds_the_handoffs():
    row = _bench.Row("s", gflop=2.0, weight_gb=3.0, batch=1, read_gbps=100.0, handoffs=100, handoff_us=50.0,
                     median_ms={"fastlstm": 40.0})
    # 30 ms of reads, then 100 hand-offs of 50 us: 35 ms
    assert _bench.limit_fraction(row, 200.0) == (35.0 / 40.0, "read+handoff")
    assert "88% read+handoff" in _bench.format_table([row], 200.0).splitlines()[2]


def test_finish_row_separates_the_probes_from_the_implementations():
    shape = _bench.Shape(10, 1, 32, 70)
    model = fastlstm.LSTM(shape.I, shape.H, seed=0)
    row, probes = _bench.new_row(shape, model, threads=2)
    want_handoffs, _ = _probes.step_handoffs(model._packed, shape.T, shape.B,
                                              fastlstm._threads.effective_threads(70, 70, 1, steps=10, input_size=32))
    assert row.handoffs == want_handoffs
    assert ("handoff probe" in probes.calls) == (want_handoffs > 0)
    for call in probes.calls.values():
        call()  # the probes run
    medians = {"fastlstm": 2e-3, "torch": 5e-3, "read probe": 1e-3, "handoff probe": 4e-4}
    if not want_handoffs:
        del medians["handoff probe"]
    timings = {k: _bench.Timing(v, 0.5 * v, 2 * v, 0.25 * v, 4 * v, 10) for k, v in medians.items()}
    _bench.finish_row(row, timings, probes)
    assert row.median_ms == {"fastlstm": 2.0, "torch": 5.0}
    assert row.spread_ms == {"fastlstm": (1.0, 4.0), "torch": (2.5, 10.0)}
    assert row.fastest_round_ms == {"fastlstm": 0.5, "torch": 1.25}
    assert row.read_gbps == probes.read_bytes / 1e-3 / 1e9
    assert row.handoff_us == (4e-4 * 1e6 / probes.handoff_steps if want_handoffs else 0.0)



# ---- the report: summary, spread, warnings, plot, output paths -----------------------------------------


def test_time_rounds_reports_the_spread_and_the_rounds(monkeypatch):
    """Call times 1, 2, 3, ... ms (a fake clock): the percentiles and round medians follow from them."""
    clock = iter(np.arange(0, 1e6) * 1e-3)
    monkeypatch.setattr(_bench.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(_bench.time, "sleep", lambda s: None)
    ticks = []
    timing = _bench.time_rounds({"a": lambda: ticks.append(1)}, seconds=0.0, min_rounds=3)["a"]
    # the sizing call reads the clock twice (1 ms: blocks of 50 calls), then each call (twice per call)
    assert timing.calls == 150 and len(ticks) == 1 + 3 * 51
    assert timing.median == pytest.approx(1e-3) and timing.q25 == timing.q75 == pytest.approx(1e-3)
    assert timing.fastest_round == timing.slowest_round == pytest.approx(1e-3)


def _row(name="T=10, B=1, I=4, H=8", gflop=1.0, weight_gb=1.0, fastlstm=1.0, **peers):
    """A measured row: median ms per implementation (fastlstm and `peers`), an IQR of +-10% around each and a
    fastest round at 90% of the median."""
    medians = {"fastlstm": fastlstm, **peers}
    return _bench.Row(name, gflop=gflop, weight_gb=weight_gb, batch=1, read_gbps=100.0, median_ms=medians,
                      spread_ms={k: (0.9 * v, 1.1 * v) for k, v in medians.items()},
                      fastest_round_ms={k: 0.9 * v for k, v in medians.items()},
                      max_abs_diff={k: 1e-7 for k in peers})


def test_summary_gives_the_median_ratio_and_agreement_per_peer():
    rows = [_row(fastlstm=1.0, torch=2.0, onnxruntime=1.5), _row(fastlstm=1.0, torch=4.0, onnxruntime=1.0),
            _row(fastlstm=2.0, torch=12.0, onnxruntime=1.0)]
    rows[1].max_abs_diff["torch"] = 3e-7
    lines = _bench.format_summary(rows)
    torch_line = next(line for line in lines if line.startswith("vs torch"))
    ort_line = next(line for line in lines if line.startswith("vs onnxruntime"))
    assert "fastlstm 4.00x faster" in torch_line and "2.00x to 6.00x" in torch_line
    assert "agree within 3.0e-07" in torch_line
    assert "1.00x faster" in ort_line and "0.50x to 1.50x" in ort_line
    rows = [_row(fastlstm=2.0, torch=1.0)]
    assert "2.00x slower" in _bench.format_summary(rows)[0]
    rows[0].max_abs_diff["torch"] = 1e-3
    assert "DISAGREE" in _bench.format_summary(rows)[0]


def test_table_shows_the_spread_of_every_timing():
    table = _bench.format_table([_row(fastlstm=1.0, torch=2.0)])
    body = table.splitlines()[2]
    assert "1 (0.9-1.1)" in body and "2 (1.8-2.2)" in body and "| 2.00 " in body


def test_a_stalled_peer_gets_a_warning_not_a_ratio():
    """A peer whose median call is 100x its fastest round stalled: no ratio, a '?' and a warning."""
    stalled = _row(fastlstm=1.0, torch=500.0, onnxruntime=2.0)
    stalled.fastest_round_ms["torch"] = 2.0
    rows = [stalled, _row(fastlstm=1.0, torch=3.0, onnxruntime=2.0)]
    assert _bench.ratio(stalled, "torch") is None and _bench.ratio(stalled, "onnxruntime") == 2.0
    body = _bench.format_table(rows).splitlines()[2]
    assert "?" in body and "500" not in body.split("|")[-3]  # the x vs torch cell
    warnings = _bench.warnings_for(rows, None)
    assert len(warnings) == 1 and "torch" in warnings[0] and "250x" in warnings[0]
    assert "fastlstm 3.00x faster (median of 1 shape:" in next(
        line for line in _bench.format_summary(rows) if line.startswith("vs torch"))


def test_a_limit_below_what_a_row_achieved_is_not_shown():
    # 1 GFLOP in 1 ms is 1000 GFLOP/s: an FMA peak of 100 GFLOP/s cannot be the limit
    fast = _row(gflop=1.0, weight_gb=0.001, fastlstm=1.0, torch=2.0)
    assert not _bench.peak_plausible([fast], 100.0)
    warnings = _bench.warnings_for([fast], 100.0)
    assert len(warnings) == 1 and "FMA peak probe measured 100 GFLOP/s" in warnings[0] and "1000" in warnings[0]
    # a plausible peak, but a read probe far below what the row read: that row's % of limit is a '?'
    slow_read = _row(gflop=0.001, weight_gb=1.0, fastlstm=1.0, torch=2.0)  # reads 1000 GB/s, probe says 100
    assert _bench.peak_plausible([slow_read], 1000.0)
    warnings = _bench.warnings_for([slow_read], 1000.0)
    assert len(warnings) == 1 and "1000% of its read limit" in warnings[0]
    assert _bench.format_table([slow_read], 1000.0).splitlines()[2].split("|")[5].strip() == "?"
    fine = _row(gflop=0.001, weight_gb=0.08, fastlstm=1.0, torch=2.0)
    assert _bench.warnings_for([fine], 1000.0) == []
    assert _bench.format_table([fine], 1000.0).splitlines()[2].split("|")[5].strip() == "80% read"


def test_plot_is_log_scale_titled_with_machine_and_threads(tmp_path):
    require("matplotlib")
    import warnings

    rows = [_row(fastlstm=1.0, torch=30.0, onnxruntime=0.5), _row(fastlstm=1.0, torch=3.0)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = _bench.figure([_bench.f32_panel(rows)], threads=3)
        ax = fig.axes[0]
        assert ax.get_xscale() == "log"
        assert _bench.cpu_model() in fig.get_suptitle() and "3 threads" in fig.get_suptitle()
        labels = [text.get_text() for text in ax.get_legend().get_texts()]
        assert labels == [f"vs {_bench.peer_label(p)}" for p in ("onnxruntime", "torch")], "no empty series"
        widths = sorted(round(p.get_width(), 6) for p in ax.patches if not np.isnan(p.get_width()))
        assert widths == [-0.5, 2.0, 29.0], "bars start at 1 (same speed)"
        path = tmp_path / "bench.png"
        assert _bench.plot([_bench.f32_panel(rows)], str(path), threads=3)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_peer_no_plot(tmp_path):
    import warnings

    path = tmp_path / "bench.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = [_row(fastlstm=1.0), _row(fastlstm=2.0, reference=50.0)]
        assert not _bench.plot([_bench.f32_panel(rows)], str(path), threads=2)
    assert not path.exists()


def test_cpu_model_is_named():
    model = _bench.cpu_model()
    assert model and model != "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    if names:
        assert model == names[0]


@pytest.mark.parametrize("option,path,message", [
    ("--plot", "{tmp}/missing/bench.png", "does not exist"),
    ("--plot", "{tmp}/bench.pdf", "must end in .png"),
    ("--plot", "{tmp}", "is a directory"),
    ("--json", "{tmp}/missing/out.json", "does not exist"),
    ("--json", "{tmp}", "is a directory"),
    ("--json", "", "give a file name"),
    # a directory that exists but takes no file, which os.access calls writable for root
    ("--json", "/proc/fastlstm-bench.json", "not writable"),
    ("--plot", "/proc/fastlstm-bench.png", "not writable"),
])
def test_bad_output_paths_fail_before_anything_runs(tmp_path, monkeypatch, capsys, option, path, message):
    from fastlstm import __main__ as cli

    def must_not_run(**kwargs):
        raise AssertionError("the bench ran before the paths were checked")

    monkeypatch.setattr(_bench, "run", must_not_run)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--quick", option, path.format(tmp=tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert option in err and message in err
    with pytest.raises(ValueError, match=message):  # the same check when run() is called directly
        _bench.check_output_paths(*((path.format(tmp=tmp_path), None) if option == "--plot"
                                    else (None, path.format(tmp=tmp_path))))


def test_good_output_paths_pass(tmp_path):
    require("matplotlib")
    _bench.check_output_paths(str(tmp_path / "a.png"), str(tmp_path / "a.json"))
    _bench.check_output_paths(str(tmp_path / "A.PNG"), None)
    assert sorted(tmp_path.iterdir()) == []   # the check leaves no file behind


@pytest.mark.parametrize("script,argv,message", [
    ("gru_bench.py", ["--threads", "0"], "--threads: must be >= 1, got 0"),
    ("quant_speed.py", ["--threads", "two"], "--threads: expected an integer, got 'two'"),
    ("call_cost.py", ["--rounds", "0"], "--rounds: must be >= 1, got 0"),
    ("contention.py", ["--block-s", "0"], "--block-s: must be >= 0.001, got 0"),
])
def test_benchmark_programs_refuse_bad_counts(tmp_path, script, argv, message):
    """Counts, threads and durations out of range: argparse's error (they printed tables of nan, or a traceback)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks", script)
    proc = run_python(f"import runpy, sys; sys.argv = [{script!r}, *{argv!r}]; runpy.run_path({path!r}, "
                      "run_name='__main__')", cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-1000:]


def test_nothing_to_run_is_an_error(monkeypatch):
    """Only sections whose library is missing: an error saying so (it printed an empty header and exited 0)."""
    real = _bench.installed
    monkeypatch.setattr(_bench, "installed", lambda m: m != "torch" and real(m))
    with pytest.raises(SystemExit, match="nothing to run: section models skipped: torch is not installed"):
        _bench.run(quick=True, only=["models"])


def test_a_peer_that_fails_to_import_counts_as_missing(tmp_path, monkeypatch, capsys):
    """An installed peer whose import fails (a broken install) is left out with a note, once; it crashed the
    bench."""
    package = tmp_path / "fastlstm_broken_peer"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('libbroken.so: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(_bench.PEER_NEEDS, "broken", ("numpy", "fastlstm_broken_peer"))
    assert not _bench.available("broken") and not _bench.available("broken")
    err = capsys.readouterr().err
    assert err.count("fastlstm_broken_peer is installed but does not import (ImportError: libbroken.so") == 1
    assert _bench.available("torch") == (importlib.util.find_spec("torch") is not None)


def test_version_and_help(tmp_path):
    proc = run_python("import runpy, sys; sys.argv = ['fastlstm', '--version']; "
                      "runpy.run_module('fastlstm', run_name='__main__')", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"fastlstm {fastlstm.__version__}"
    for argv in (["--help"], ["bench", "--help"], ["info", "--help"]):
        proc = subprocess.run([sys.executable, "-m", "fastlstm", *argv], cwd=tmp_path, capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": package_parent()})
        assert proc.returncode == 0, proc.stderr
        assert "usage: python -m fastlstm" in proc.stdout
        assert "`" not in proc.stdout, "no reStructuredText markup in the help"


def test_format_ms():
    assert [_bench.format_ms(v) for v in (0.00672, 0.0392, 2.184, 46.6, 1163.4)] == [
        "0.0067", "0.0392", "2.18", "46.6", "1163"]


def test_a_run_reports_summary_then_details(tmp_path, monkeypatch, capsys):
    """A whole run on one small shape (no pauses): the summary comes before the details, and the JSON and the
    plot are written where asked."""
    monkeypatch.setattr(_bench, "QUICK_SHAPES", [_bench.Shape(6, 2, 8, 16)])
    monkeypatch.setattr(_bench, "PAUSE_S", 0.0)
    json_path, plot_path = tmp_path / "bench.json", tmp_path / "bench.png"
    monkeypatch.setattr(fastlstm._threads, "_override", fastlstm._threads._override)  # run() sets the threads
    rows = _bench.run(quick=True, threads=1, json_path=str(json_path), only=["f32"],
                      plot_path=str(plot_path) if _bench.installed("matplotlib") else None)["f32"]
    out = capsys.readouterr().out
    assert out.index("Summary") < out.index("Details") and "1 thread;" in out.splitlines()[0]
    assert len(rows) == 1 and rows[0].median_ms["fastlstm"] > 0
    lo, hi = rows[0].spread_ms["fastlstm"]
    assert lo <= rows[0].median_ms["fastlstm"] <= hi
    assert "vs the NumPy reference: outputs agree within" in out
    for peer in _bench.PEERS:
        assert (f"vs {_bench.peer_label(peer)}" in out) == (peer in rows[0].median_ms)
    data = json.loads(json_path.read_text())
    assert data["threads"] == 1 and data["cpu"] == _bench.cpu_model() and list(data["sections"]) == ["f32"]
    assert len(data["sections"]["f32"]["rows"]) == 1
    if _bench.installed("matplotlib"):
        assert plot_path.exists() == any(p in rows[0].median_ms for p in _bench.PEERS)


def test_a_run_without_peers_says_so_and_draws_nothing(tmp_path, monkeypatch, capsys):
    import warnings

    real = _bench.installed
    monkeypatch.setattr(_bench, "installed", lambda m: m not in ("torch", "onnx", "onnxruntime") and real(m))
    monkeypatch.setattr(_bench, "QUICK_SHAPES", [_bench.Shape(6, 2, 8, 16)])
    monkeypatch.setattr(_bench, "PAUSE_S", 0.0)
    monkeypatch.setattr(fastlstm._threads, "_override", fastlstm._threads._override)
    plot_path = tmp_path / "bench.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _bench.run(quick=True, threads=1, plot_path=str(plot_path) if real("matplotlib") else None, only=["f32"])
    out = capsys.readouterr().out
    assert "not compared (not installed): onnxruntime, torch, openvino f32" in out
    assert "vs the NumPy reference: outputs agree within" in out and "vs torch" not in out
    if real("matplotlib"):
        assert "no plot written" in out and not plot_path.exists()


# ---- sections and --only -------------------------------------------------------------------------


def test_the_sections_cover_the_issues_shapes():
    """The reduced-precision section times issue 17's shapes and the GRU section issue 18's, each once."""
    def fields(shapes):
        return [(s.T if not s.streaming else "step", s.B, s.I, s.H, s.layers, s.bidirectional) for s in shapes]

    assert fields(_bench_sections.QUANT_SHAPES) == [
        ("step", 1, 256, 512, 1, False), (100, 1, 256, 512, 1, False), (100, 4, 128, 256, 1, False),
        (100, 32, 256, 512, 1, False), (50, 64, 512, 1024, 2, False)]
    assert fields(_bench_sections.GRU_SHAPES) == [
        ("step", 1, 128, 128, 1, False), ("step", 1, 256, 512, 1, False), (100, 1, 32, 70, 1, False),
        (100, 1, 256, 512, 1, False), (100, 32, 256, 512, 1, False), (100, 1, 128, 256, 2, True)]
    assert [s.name for s in _bench_sections.SECTIONS] == list(_bench.SECTION_NAMES[1:])


@pytest.mark.parametrize("text,expected", [
    ("f32", ["f32"]), ("gru,quant", ["quant", "gru"]), (" models , f32 ", ["f32", "models"]),
    ("quant,quant", ["quant"]),
])
def test_only_takes_section_names_in_the_bench_order(text, expected):
    assert _bench.parse_only(text) == expected


@pytest.mark.parametrize("text,message", [
    ("lstm", "unknown section 'lstm'"), ("f32,int8", "unknown section 'int8'"), ("", "unknown section ''"),
    (",", "unknown section ','"),
])
def test_bad_only_fails_before_anything_runs(monkeypatch, capsys, text, message):
    from fastlstm import __main__ as cli

    def must_not_run(**kwargs):
        raise AssertionError("the bench ran before --only was checked")

    real_run = _bench.run
    monkeypatch.setattr(_bench, "run", must_not_run)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--quick", "--only", text])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--only" in err and message in err and "choose from f32, quant, gru, models" in err
    with pytest.raises(ValueError, match=message):  # the same check when run() is called directly
        real_run(quick=True, only=[text])
    assert capsys.readouterr().out == ""


def test_the_command_line_passes_its_options_to_the_run(monkeypatch):
    from fastlstm import __main__ as cli

    calls = []
    monkeypatch.setattr(_bench, "run", lambda **kwargs: calls.append(kwargs))
    assert cli.main(["bench", "--quick", "--only", "gru,quant", "--threads", "1"]) == 0
    assert cli.main(["bench"]) == 0
    assert calls == [
        {"quick": True, "threads": 1, "plot_path": None, "json_path": None, "only": ["quant", "gru"]},
        {"quick": False, "threads": None, "plot_path": None, "json_path": None, "only": None},
    ]


@pytest.fixture
def tiny_sections(monkeypatch):
    """Every section on tiny shapes, without pauses; the threads run() sets are restored afterwards."""
    monkeypatch.setattr(_bench, "QUICK_SHAPES", [_bench.Shape(6, 2, 8, 16)])
    monkeypatch.setattr(_bench_sections, "QUANT_QUICK_SHAPES", [_bench.Shape(1, 2, 8, 16, streaming=True),
                                                                  _bench.Shape(6, 2, 8, 16)])
    monkeypatch.setattr(_bench_sections, "GRU_QUICK_SHAPES", [_bench.Shape(1, 2, 8, 16, streaming=True),
                                                                _bench.Shape(6, 2, 8, 16, layers=2, bidirectional=True)])
    monkeypatch.setattr(_bench, "PAUSE_S", 0.0)
    monkeypatch.setattr(fastlstm._threads, "_override", fastlstm._threads._override)


def test_quant_and_gru_sections_report_ratios_errors_and_agreement(tiny_sections, tmp_path, capsys):
    json_path = tmp_path / "bench.json"
    results = _bench.run(quick=True, threads=1, json_path=str(json_path), only=["gru", "quant"])
    out = capsys.readouterr().out
    assert list(results) == ["quant", "gru"]
    assert "sections quant (2 shapes), gru (2 shapes)" in out.splitlines()[0] and "float32 LSTM" not in out
    quant, gru = _bench_sections.SECTIONS[:2]
    summary = out[out.index("Summary"):out.index("Details")]
    for section in (quant, gru):
        assert f"{section.heading} ({section.name})" in summary and f"{section.title} ({section.name})" in out
        for row in results[section.name]:
            present = [n for n in section.runners if n in section.peers and _bench.available(n)]
            want = [n for n in section.runners if n not in section.peers] + present
            assert sorted(row.median_ms) == sorted(want) and all(v > 0 for v in row.median_ms.values())
            assert list(row.ratios) == [label for label, _, _ in section.comparisons]
    for row in results["quant"]:
        # the reduced-precision outputs differ from the float32 model's, by rounding only
        assert set(row.max_abs_diff) == set(row.median_ms) - {"fastlstm f32"}
        assert all(0 < d < 0.05 for d in row.max_abs_diff.values()), row.max_abs_diff
        assert row.ratios["int8 vs fastlstm f32"] == pytest.approx(
            row.median_ms["fastlstm f32"] / row.median_ms["fastlstm int8"])
    for row in results["gru"]:
        assert set(row.max_abs_diff) == set(row.median_ms) - {"fastlstm"}
        assert all(d <= _bench.AGREEMENT for d in row.max_abs_diff.values()), row.max_abs_diff
    assert "fastlstm int8 vs fastlstm f32: " in summary and "max abs error against the float32 model" in summary
    data = json.loads(json_path.read_text())
    assert list(data["sections"]) == ["quant", "gru"]
    for section in (quant, gru):
        saved = data["sections"][section.name]
        assert saved["title"] == section.title and len(saved["rows"]) == 2
        assert saved["ratios"] == {label: [slower, faster] for label, slower, faster in section.comparisons}
        assert set(saved["rows"][0]) == {"shape", "median_ms", "spread_ms", "fastest_round_ms", "max_abs_diff",
                                         "ratios"}
    if _bench.available("openvino default"):
        assert any(n.startswith("OpenVINO's default precision here: ") for n in data["sections"]["quant"]["notes"])


def test_missing_peers_are_named_and_left_out(tiny_sections, monkeypatch, capsys):
    real = _bench.installed
    monkeypatch.setattr(_bench, "installed", lambda m: m not in ("torch", "openvino", "onnxruntime") and real(m))
    results = _bench.run(quick=True, threads=1, only=["quant", "gru", "models"])
    out = capsys.readouterr().out
    assert "section models skipped: torch is not installed" in out and "models" not in results
    assert ("not installed, not compared: openvino default, onnxruntime int8, torch, onnxruntime, openvino f32"
            in out)
    assert set(results["quant"][0].median_ms) == {"fastlstm f32", "fastlstm bf16", "fastlstm int8"}
    assert set(results["gru"][0].median_ms) == {"fastlstm"}
    assert f"fastlstm bf16 vs {_bench.peer_label('openvino default')}: not measured" in out
    int8_line = next(line for line in out.splitlines() if "fastlstm int8 vs fastlstm f32: " in line)
    assert "x faster (median of 2 shapes" in int8_line or "x slower (median of 2 shapes" in int8_line


def test_every_section_in_one_run_json_and_plot(tiny_sections, monkeypatch, tmp_path, capsys):
    """All sections by default; the models section on a small stand-in model (the real ones: the next test)."""
    torch = require("torch")
    require("matplotlib")
    import fastlstm.torch
    from fastlstm import _bench_models

    def small_cases(quick):
        torch.manual_seed(0)
        module = torch.nn.LSTM(8, 16).eval()
        fast = fastlstm.torch.accelerate(torch.nn.LSTM(8, 16).eval())
        fast.load_state_dict(module.state_dict())
        x = torch.randn(5, 2, 8)
        slow_call, fast_call = (lambda: module(x)[0]), (lambda: fast(x)[0])
        with torch.inference_mode():
            diff = _bench_models.max_difference("small", slow_call, fast_call)
        return {"small LSTM": _bench_models.ModelCase(3, slow_call, fast_call, diff)}

    monkeypatch.setattr(_bench_models, "case_runners", small_cases)
    json_path, plot_path = tmp_path / "bench.json", tmp_path / "bench.png"
    results = _bench.run(quick=True, threads=1, json_path=str(json_path), plot_path=str(plot_path))
    out = capsys.readouterr().out
    assert list(results) == list(_bench.SECTION_NAMES)
    assert results["models"][0].shape == "small LSTM" and results["models"][0].max_abs_diff["accelerated"] <= 2e-5
    assert "accelerated vs torch" in out and "torch / accelerated" in out
    data = json.loads(json_path.read_text())
    assert list(data["sections"]) == list(_bench.SECTION_NAMES)
    assert {"fma_gflops", "sgemm_gflops", "rows"} <= set(data["sections"]["f32"])
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_models_section_runs_the_real_models(monkeypatch, capsys):
    require("torch")
    monkeypatch.setattr(_bench, "PAUSE_S", 0.0)
    monkeypatch.setattr(fastlstm._threads, "_override", fastlstm._threads._override)
    rows = _bench.run(quick=True, threads=1, only=["models"])["models"]
    assert [r.shape for r in rows] == _bench_sections.MODEL_CASES
    for r in rows:
        assert set(r.median_ms) == {"torch", "accelerated"} and r.max_abs_diff["accelerated"] <= 2e-5
    assert "PyTorch models, accelerated (models)" in capsys.readouterr().out


def _section_row(shape, diffs=None, **medians):
    row = _bench_sections.SectionRow(shape, median_ms=medians, spread_ms={k: (v, v) for k, v in medians.items()},
                                     fastest_round_ms=dict(medians), max_abs_diff=diffs or {})
    for label, slower, faster in _bench_sections.SECTIONS[1].comparisons:
        row.ratios[label] = _bench.ratio(row, slower, faster)
    return row


def test_section_summary_table_and_disagreement():
    gru = _bench_sections.SECTIONS[1]
    rows = [_section_row("a", {"torch": 1e-7}, fastlstm=1.0, torch=4.0, onnxruntime=1.5),
            _section_row("b", {"torch": 3e-5}, fastlstm=2.0, torch=4.0, onnxruntime=1.0)]
    lines = _bench_sections.summary(gru, rows)
    assert lines[0] == f"fastlstm vs {_bench.peer_label('torch')}: 3.00x faster (median of 2 shapes: 2.00x to 4.00x)"
    assert lines[1].endswith("1.00x faster (median of 2 shapes: 0.50x to 1.50x)")
    assert lines[2] == f"fastlstm vs {_bench.peer_label('openvino f32')}: not measured"
    assert "outputs DISAGREE (> 2e-05): torch" in lines[-1]
    assert _bench_sections.disagreement(gru, rows) == 3e-5
    body = _bench_sections.table(gru, rows).splitlines()
    assert "vs torch" in body[0] and "openvino f32 ms" not in body[0]
    assert "| 4.00 " in body[2] and "| 0.50 " in body[3] and "3.0e-05" in body[3]
    quant = _bench_sections.SECTIONS[0]
    assert _bench_sections.disagreement(quant, [_section_row("c", {"fastlstm bf16": 1e-2}, fastlstm=1.0)]) == 0.0


def test_plot_draws_a_panel_per_section_with_ratios(tmp_path):
    require("matplotlib")
    gru = _bench_sections.SECTIONS[1]
    rows = [_section_row("a", fastlstm=1.0, torch=4.0), _section_row("b", fastlstm=2.0, torch=1.0)]
    panels = [_bench.f32_panel([_row(fastlstm=1.0, torch=3.0)]),
              _bench.Panel("GRU", [r.shape for r in rows], {k: [r.ratios[k] for r in rows] for k in rows[0].ratios}),
              _bench.Panel("nothing", ["c"], {"vs x": [None]})]
    fig = _bench.figure(panels, threads=2)
    assert [ax.get_title() for ax in fig.axes] == ["float32 LSTM (f32)", "GRU"]
    assert all(ax.get_xscale() == "log" for ax in fig.axes)
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["vs torch"]
    widths = sorted(round(p.get_width(), 6) for p in fig.axes[1].patches if not np.isnan(p.get_width()))
    assert widths == [-0.5, 3.0]
    assert gru.comparisons[0][0] == "vs torch"
