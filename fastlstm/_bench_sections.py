"""The sections of ``python -m fastlstm bench`` after the float32 LSTM one (_bench): reduced precision ("quant":
fastlstm bf16 and int8 beside OpenVINO's default precision and onnxruntime int8), GRU ("gru": fastlstm.GRU beside
torch, onnxruntime and OpenVINO f32) and PyTorch models ("models": whole models before and after
fastlstm.torch.accelerate, when torch is installed).

A section is a list of cases. A case is a set of zero-argument calls on the same weights and input, timed together
in interleaved rounds (_bench.time_rounds), and the max abs difference of each call's output from the case's base
output (the float32 model's for "quant", fastlstm's for "gru", torch's for "models"). A section's comparisons are
ratios: the slower-expected runner's median time over the other's. benchmarks/quant_speed.py, quant_accuracy.py
and gru_bench.py build their runners here too.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from . import _bench, _peers, _peers_gru, _peers_quant
from ._bench import Shape
from ._gru import GRU
from ._lstm import LSTM, NativeModel

Run = Callable[[np.ndarray], np.ndarray]  # a forward x -> output, or a streaming step x_t -> h_t (state inside)

# issue 17's shapes
QUANT_SHAPES = [
    Shape(1, 1, 256, 512, streaming=True),
    Shape(100, 1, 256, 512),
    Shape(100, 4, 128, 256),
    Shape(100, 32, 256, 512),
    Shape(50, 64, 512, 1024, layers=2),
]
QUANT_QUICK_SHAPES = [Shape(1, 1, 256, 512, streaming=True), Shape(100, 1, 256, 512), Shape(20, 32, 256, 512)]
QUANT_FORMATS = ("f32", "bf16", "int8")
# issue 18's shapes
GRU_SHAPES = [
    Shape(1, 1, 128, 128, streaming=True),
    Shape(1, 1, 256, 512, streaming=True),
    Shape(100, 1, 32, 70),
    Shape(100, 1, 256, 512),
    Shape(100, 32, 256, 512),
    Shape(100, 1, 128, 256, layers=2, bidirectional=True),
]
GRU_QUICK_SHAPES = [Shape(1, 1, 128, 128, streaming=True), Shape(100, 1, 32, 70), Shape(20, 4, 128, 256)]
# streaming steps of a case checked against the base before timing, from the zero state
AGREEMENT_STEPS = 8


@dataclass
class Case:
    """What one row of a section times: calls by runner name, and the max abs difference of each runner's output
    from the base runner's (the base itself absent)."""

    name: str
    calls: Dict[str, Callable[[], object]]
    diffs: Dict[str, float]
    min_rounds: int
    around: Callable[[], ContextManager[Any]] = contextlib.nullcontext  # entered while the calls are timed
    note: str = ""  # a fact of the run worth printing once (OpenVINO's default precision)


@dataclass(frozen=True)
class Section:
    name: str  # what --only takes
    heading: str  # a few words: the summary's and the plot's
    title: str  # the details'
    runners: Tuple[str, ...]  # in the order of the table's columns
    peers: Tuple[str, ...]  # the runners that are other libraries, compared when installed (see _bench.PEER_NEEDS)
    comparisons: Tuple[Tuple[str, str, str], ...]  # (label, slower, faster): ratio = slower's time / faster's
    diff_heading: str  # what max_abs_diff measures
    agreement: Optional[float]  # a difference above this is a disagreement (None: differences are errors to show)
    shape_names: Callable[[bool], List[str]]  # quick -> the names of its cases, before any is built
    cases: Callable[[bool, int], Iterator[Case]]  # (quick, threads) -> its cases, built one at a time


@dataclass
class SectionRow:
    """One measured case: median ms per runner, the 25th-75th percentile of its calls, the median call of its
    fastest round, the max abs differences, and the section's ratios (None: a runner absent or disturbed)."""

    shape: str
    median_ms: Dict[str, float] = field(default_factory=dict)
    spread_ms: Dict[str, Tuple[float, float]] = field(default_factory=dict)
    fastest_round_ms: Dict[str, float] = field(default_factory=dict)
    max_abs_diff: Dict[str, float] = field(default_factory=dict)
    ratios: Dict[str, Optional[float]] = field(default_factory=dict)


# ---- runners -------------------------------------------------------------------------------------


def output_of(model: NativeModel) -> Run:
    """x -> the model's output (without the final states)."""
    return lambda x: model(x)[0]


def stream_stepper(model: NativeModel, batch: int) -> Run:
    """x_t -> h_t of a stream of ``model`` writing into one preallocated buffer (returned: copy it to keep it)."""
    stream = model.stream(batch)
    out = np.empty((batch, model.out_size), np.float32)
    return lambda x_t: stream.step(x_t, out=out)


def quant_runners(model: LSTM, shape: Sequence[int], threads: Optional[int]) -> Tuple[Dict[str, Run], str]:
    """Forwards over x of ``shape`` (T, B, I): fastlstm f32, bf16 and int8 (``model.quantize``), and the installed
    peers on the same weights: OpenVINO at its default precision, onnxruntime int8 (quantize_dynamic, per channel).
    Also the precision OpenVINO chose ("" when it is not installed)."""
    runners = {f"fastlstm {fmt}": output_of(model if fmt == "f32" else model.quantize(fmt)) for fmt in QUANT_FORMATS}
    precision = ""
    if _bench.available("openvino default"):
        runners["openvino default"], precision = _peers.openvino_runner(model, shape, threads)
    if _bench.available("onnxruntime int8"):
        runners["onnxruntime int8"] = _peers_quant.ort_int8_runner(model, threads)
    return runners, precision


def quant_steppers(model: LSTM, batch: int, threads: Optional[int]) -> Tuple[Dict[str, Run], str]:
    """Streaming steps of a one-layer ``model`` as quant_runners' forwards, each carrying its state."""
    steppers = {f"fastlstm {fmt}": stream_stepper(model if fmt == "f32" else model.quantize(fmt), batch)
                for fmt in QUANT_FORMATS}
    precision = ""
    if _bench.available("openvino default"):
        steppers["openvino default"], precision = _peers.openvino_step_runner(model, batch, threads)
    if _bench.available("onnxruntime int8"):
        steppers["onnxruntime int8"] = _peers_quant.ort_int8_step_runner(model, threads)
    return steppers, precision


def gru_runners(model: GRU, threads: Optional[int]) -> Dict[str, Run]:
    """Forwards over a time-major x: fastlstm.GRU and the installed peers (torch, onnxruntime, OpenVINO f32)."""
    runners = {"fastlstm": output_of(model)}
    if _bench.available("torch"):
        runners["torch"] = _peers_gru.torch_runner(model, threads)
    if _bench.available("onnxruntime"):
        runners["onnxruntime"] = _peers_gru.ort_runner(model, threads)
    if _bench.available("openvino f32"):
        runners["openvino f32"] = _peers_gru.openvino_runner(model, threads)
    return runners


def gru_steppers(model: GRU, batch: int, threads: Optional[int]) -> Dict[str, Run]:
    """Streaming steps of a one-layer GRU in fastlstm and the installed peers, each carrying its state."""
    steppers = {"fastlstm": stream_stepper(model, batch)}
    if _bench.available("torch"):
        steppers["torch"] = _peers_gru.torch_step_runner(model, threads)
    if _bench.available("onnxruntime"):
        steppers["onnxruntime"] = _peers_gru.ort_step_runner(model, threads)
    if _bench.available("openvino f32"):
        steppers["openvino f32"] = _peers_gru.openvino_step_runner(model, threads)
    return steppers


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b), initial=0.0))


def forward_case(name: str, runners: Dict[str, Run], base: str, x: np.ndarray, min_rounds: int) -> Case:
    """The case of forwards on x: each runner's difference from ``base``'s output, and its call on x."""
    expected = runners[base](x)
    diffs = {n: max_abs_diff(run(x), expected) for n, run in runners.items() if n != base}
    return Case(name, {n: functools.partial(run, x) for n, run in runners.items()}, diffs, min_rounds)


def step_case(name: str, steppers: Dict[str, Run], base: str, xs: np.ndarray, min_rounds: int) -> Case:
    """The case of streaming steps: each stepper's difference from ``base``'s over the steps xs (T, B, I) from the
    zero state; then every stepper keeps stepping on xs[0]."""
    outputs = {n: np.stack([step(x).copy() for x in xs]) for n, step in steppers.items()}
    diffs = {n: max_abs_diff(out, outputs[base]) for n, out in outputs.items() if n != base}
    return Case(name, {n: functools.partial(step, xs[0]) for n, step in steppers.items()}, diffs, min_rounds)


def quant_case(shape: Shape, threads: int, quick: bool) -> Case:
    """One row of the reduced-precision section: errors against the float32 model, then the calls."""
    model = LSTM(shape.I, shape.H, shape.layers, bidirectional=shape.bidirectional, seed=0)
    rng = np.random.default_rng(0)
    if shape.streaming:
        xs = rng.standard_normal((AGREEMENT_STEPS, shape.B, shape.I)).astype(np.float32)
        steppers, precision = quant_steppers(model, shape.B, threads)
        case = step_case(shape.name, steppers, "fastlstm f32", xs, _bench.min_rounds(shape, quick))
    else:
        x = rng.standard_normal((shape.T, shape.B, shape.I)).astype(np.float32)
        runners, precision = quant_runners(model, x.shape, threads)
        case = forward_case(shape.name, runners, "fastlstm f32", x, _bench.min_rounds(shape, quick))
    if precision:
        case.note = f"OpenVINO's default precision here: {precision}"
    return case


def gru_case(shape: Shape, threads: int, quick: bool) -> Case:
    """One row of the GRU section: agreement with fastlstm's output, then the calls."""
    model = GRU(shape.I, shape.H, shape.layers, bidirectional=shape.bidirectional, seed=0)
    rng = np.random.default_rng(0)
    if shape.streaming:
        xs = rng.standard_normal((AGREEMENT_STEPS, shape.B, shape.I)).astype(np.float32)
        steppers = gru_steppers(model, shape.B, threads)
        return step_case(shape.name, steppers, "fastlstm", xs, _bench.min_rounds(shape, quick))
    x = rng.standard_normal((shape.T, shape.B, shape.I)).astype(np.float32)
    return forward_case(shape.name, gru_runners(model, threads), "fastlstm", x, _bench.min_rounds(shape, quick))


def quant_cases(quick: bool, threads: int) -> Iterator[Case]:
    for shape in QUANT_QUICK_SHAPES if quick else QUANT_SHAPES:
        yield quant_case(shape, threads, quick)


def gru_cases(quick: bool, threads: int) -> Iterator[Case]:
    for shape in GRU_QUICK_SHAPES if quick else GRU_SHAPES:
        yield gru_case(shape, threads, quick)


MODEL_CASES = ["text classifier, batch 1", "text classifier, batch 32, PackedSequence",
               "streaming speech, one frame per call"]


def model_cases(quick: bool, threads: int) -> Iterator[Case]:
    """The end-to-end cases (_bench_models), torch and fastlstm on ``threads`` threads, timed under
    torch.inference_mode()."""
    import torch

    from . import _bench_models

    torch.set_num_threads(threads)
    for name, case in _bench_models.case_runners(quick).items():
        calls = {"torch": case.torch_call, "accelerated": case.accelerated_call}
        yield Case(name, calls, {"accelerated": case.max_abs_diff}, 3 if quick else 5, torch.inference_mode)


SECTIONS = [
    Section(
        "quant",
        "bf16 and int8 weights",
        "Reduced precision: fastlstm bf16 and int8 weights beside OpenVINO's default precision and onnxruntime "
        "int8 (quantize_dynamic, per channel)",
        runners=tuple(f"fastlstm {fmt}" for fmt in QUANT_FORMATS) + ("openvino default", "onnxruntime int8"),
        peers=("openvino default", "onnxruntime int8"),
        comparisons=(("bf16 vs OpenVINO default", "openvino default", "fastlstm bf16"),
                     ("int8 vs onnxruntime int8", "onnxruntime int8", "fastlstm int8"),
                     ("int8 vs fastlstm f32", "fastlstm f32", "fastlstm int8")),
        diff_heading="max abs error against the float32 model's output",
        agreement=None,
        shape_names=lambda quick: [s.name for s in (QUANT_QUICK_SHAPES if quick else QUANT_SHAPES)],
        cases=quant_cases,
    ),
    Section(
        "gru",
        "GRU, float32",
        "GRU, float32: fastlstm.GRU beside torch.nn.GRU, onnxruntime's GRU and OpenVINO (f32)",
        runners=("fastlstm", "torch", "onnxruntime", "openvino f32"),
        peers=("torch", "onnxruntime", "openvino f32"),
        comparisons=(("vs torch", "torch", "fastlstm"), ("vs onnxruntime", "onnxruntime", "fastlstm"),
                     ("vs openvino f32", "openvino f32", "fastlstm")),
        diff_heading="max |other - fastlstm| of the outputs",
        agreement=_bench.AGREEMENT,
        shape_names=lambda quick: [s.name for s in (GRU_QUICK_SHAPES if quick else GRU_SHAPES)],
        cases=gru_cases,
    ),
    Section(
        "models",
        "PyTorch models, accelerated",
        "PyTorch models end to end, under torch.inference_mode(): as written, and after fastlstm.torch.accelerate",
        runners=("torch", "accelerated"),
        peers=(),
        comparisons=(("torch / accelerated", "torch", "accelerated"),),
        diff_heading="max |accelerated - torch| of the outputs",
        agreement=_bench.AGREEMENT,
        shape_names=lambda quick: list(MODEL_CASES),
        cases=model_cases,
    ),
]
SECTION_NEEDS = {"models": "torch"}  # a section that cannot run at all without this module


# ---- measuring and reporting ---------------------------------------------------------------------


def measure(section: Section, case: Case, seconds: float) -> SectionRow:
    """Time a case's calls in interleaved rounds and fill its row, ratios included."""
    with case.around():
        timings = _bench.time_rounds(case.calls, seconds, case.min_rounds)
    row = SectionRow(case.name, max_abs_diff=dict(case.diffs))
    for name, t in timings.items():
        row.median_ms[name] = 1e3 * t.median
        row.spread_ms[name] = (1e3 * t.q25, 1e3 * t.q75)
        row.fastest_round_ms[name] = 1e3 * t.fastest_round
    for label, slower, faster in section.comparisons:
        row.ratios[label] = _bench.ratio(row, slower, faster)
    return row


def summary(section: Section, rows: List[SectionRow]) -> List[str]:
    """Per comparison, the median ratio over the rows and their range; then the largest difference per runner
    (and whether it is within the section's agreement)."""
    lines = []
    for label, slower, faster in section.comparisons:
        ratios = [x for x in (r.ratios.get(label) for r in rows) if x is not None]
        what = f"{_bench.peer_label(faster)} vs {_bench.peer_label(slower)}"
        if not ratios:
            present = any(slower in r.median_ms and faster in r.median_ms for r in rows)
            lines.append(f"{what}: " + ("no plausible timing (see the warnings)" if present else "not measured"))
            continue
        median = float(np.median(ratios))
        speed = f"{median:.2f}x faster" if median >= 1 else f"{1 / median:.2f}x slower"
        lines.append(f"{what}: {speed} (median of {len(ratios)} shape{'s' * (len(ratios) != 1)}: "
                     f"{min(ratios):.2f}x to {max(ratios):.2f}x)")
    worst: Dict[str, float] = {}
    for r in rows:
        for name, diff in r.max_abs_diff.items():
            worst[name] = max(worst.get(name, 0.0), diff)
    if worst:
        cells = ", ".join(f"{name} {diff:.1e}" for name, diff in worst.items())
        lines.append(f"{section.diff_heading}, largest: {cells}")
        bad = [name for name, diff in worst.items() if section.agreement is not None and diff > section.agreement]
        if bad:
            lines.append(f"outputs DISAGREE (> {section.agreement:.0e}): {', '.join(bad)}")
    return lines


def table(section: Section, rows: List[SectionRow]) -> str:
    """Per row: each runner's median ms with the 25th-75th percentile of its calls, the section's ratios ("?"
    where a time cannot be right, "-" where a runner is absent) and the max abs differences."""
    runners = [n for n in section.runners if any(n in r.median_ms for r in rows)]
    diffs = [n for n in section.runners if any(n in r.max_abs_diff for r in rows)]
    head = ["shape"] + [f"{n} ms" for n in runners] + [label for label, _, _ in section.comparisons]
    head += [f"diff {n}" for n in diffs]
    lines = [head]
    for r in rows:
        cells = [r.shape] + [_bench.timing_cell(r, n) for n in runners]
        for label, slower, faster in section.comparisons:
            x = r.ratios.get(label)
            cells.append("-" if slower not in r.median_ms or faster not in r.median_ms else
                         "?" if x is None else f"{x:.2f}")
        cells += [f"{r.max_abs_diff[n]:.1e}" if n in r.max_abs_diff else "-" for n in diffs]
        lines.append(cells)
    return _bench.markdown_table(lines)


def disagreement(section: Section, rows: List[SectionRow]) -> float:
    """The largest difference above the section's agreement (0.0 when all agree or the section has none)."""
    if section.agreement is None:
        return 0.0
    return max([0.0] + [d for r in rows for d in r.max_abs_diff.values() if d > section.agreement])
