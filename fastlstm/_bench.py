"""``python -m fastlstm bench``: fastlstm against the reference and the installed peers, in one run.

Sections (``--only`` picks some): "f32", float32 LSTMs (this module); "quant", bf16 and int8 weights; "gru";
"models", PyTorch models accelerated end to end (the last three: _bench_sections). For every built-in shape of a
section, all implementations get the same weights and input; their outputs are checked to agree (or, for reduced
precision, their errors measured), then they are timed in interleaved rounds (blocks of calls of each in turn, so
machine noise hits all alike). The report opens with a summary (per section and peer: the median speed ratio and
how closely the outputs agree), then a table per section with the spread of the times. Peers run as their users
run them: torch under inference_mode, onnxruntime with one LSTM node per layer, OpenVINO compiled for the input's
shape (asked for f32 beside float32 models: its default is bf16 on CPUs with AVX512-BF16); all with the same
thread count. A number that cannot be right (a limit below what a row achieved, a peer far slower than in its
own other rounds) is replaced by a warning.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from . import __version__, _cpu, _peers, _probes, _threads
from ._lstm import LSTM
from ._packing import _aligned_empty
from .reference import LSTM as ReferenceLSTM

PEERS = ("onnxruntime", "torch", "openvino f32")  # compared with float32 LSTMs when installed, in this order
# the modules each peer of any section needs; its first word names the distribution whose version is shown
PEER_NEEDS = {
    "torch": ("torch",),
    "onnxruntime": ("onnxruntime", "onnx"),
    "onnxruntime int8": ("onnxruntime", "onnx"),
    "openvino f32": ("openvino", "onnx"),
    "openvino default": ("openvino", "onnx"),
}
# A row that ran faster than this multiple of a measured limit shows that the probe was disturbed.
LIMIT_SLACK = 1.25
# A runner whose median call is this many times slower than its fastest round was disturbed (or stalled).
ROUND_SPREAD_LIMIT = 100.0
# Largest |fastlstm - peer| of the outputs that counts as agreement (float32, the DESIGN's torch tolerance).
AGREEMENT = 2e-5


@dataclass
class Shape:
    T: int
    B: int
    I: int  # noqa: E741
    H: int
    layers: int = 1
    bidirectional: bool = False
    streaming: bool = False  # one streaming step (T = 1 with the state carried)

    @property
    def name(self) -> str:
        extra = (f", {self.layers} layers" if self.layers > 1 else "") + (", bidir" if self.bidirectional else "")
        if self.streaming:
            return f"step, B={self.B}, I={self.I}, H={self.H}{extra}"
        return f"T={self.T}, B={self.B}, I={self.I}, H={self.H}{extra}"

    def step_weight_bytes(self) -> float:
        """float32 bytes of weights one time step reads: W_hh of every direction of a layer (the layers run one
        after another, W_ih in a batched product per chunk of steps); a streaming step reads W_ih and W_hh of
        every layer."""
        D = 2 if self.bidirectional else 1
        if not self.streaming:
            return float(D * 4 * self.H * self.H * 4)
        total, I = 0, self.I
        for _ in range(self.layers):
            total += D * 4 * self.H * (I + self.H) * 4
            I = D * self.H
        return float(total)

    def weight_bytes(self) -> float:
        """float32 bytes of weights one forward reads at least (each step reads them again when B is small)."""
        return self.step_weight_bytes() * self.T * (1 if self.streaming else self.layers)

    def flops(self) -> float:
        """Multiply-adds x 2 of the gate products of one forward (activations not counted)."""
        D = 2 if self.bidirectional else 1
        total, I = 0, self.I
        for _ in range(self.layers):
            total += D * 2 * self.T * self.B * 4 * self.H * (I + self.H)
            I = D * self.H
        return float(total)


SHAPES = [
    Shape(1, 1, 128, 128, streaming=True),
    Shape(1, 1, 256, 512, streaming=True),
    Shape(100, 1, 32, 70),
    Shape(100, 1, 256, 512),
    Shape(100, 4, 128, 256),
    Shape(100, 32, 256, 512),
    Shape(50, 64, 512, 1024, layers=2),
    Shape(100, 1, 128, 256, layers=2, bidirectional=True),
]
QUICK_SHAPES = [Shape(1, 1, 128, 128, streaming=True), Shape(100, 1, 32, 70), Shape(100, 4, 128, 256),
                Shape(20, 32, 256, 512)]


@dataclass
class Timing:
    """Seconds per call of one implementation over a row's interleaved rounds."""

    median: float
    q25: float  # 25th and 75th percentiles of the calls
    q75: float
    fastest_round: float  # median call of its fastest and slowest round (block of calls)
    slowest_round: float
    calls: int


@dataclass
class Row:
    shape: str
    gflop: float
    weight_gb: float
    batch: int
    read_gbps: float = 0.0  # this machine reading a buffer of one step's weights (read_probe), same threads
    handoffs: int = 0  # time steps handed from thread to thread on the critical path (_probes.step_handoffs)
    handoff_us: float = 0.0  # this machine handing one step between those threads (handoff_probe)
    median_ms: Dict[str, float] = field(default_factory=dict)
    spread_ms: Dict[str, Tuple[float, float]] = field(default_factory=dict)  # 25th-75th percentile of the calls
    fastest_round_ms: Dict[str, float] = field(default_factory=dict)  # median call of the fastest round
    max_abs_diff: Dict[str, float] = field(default_factory=dict)


def probe_isa() -> str:
    """The instruction set of the float32 LSTM kernels models are packed for now: the probes run on it."""
    return _cpu.kernels_for("lstm", np.dtype(np.float32))[0].rsplit("/", 1)[1]


def at_least(minimum: float, kind: Callable[[str], Any] = int) -> Callable[[str], Any]:
    """An argparse type: a number of `kind` >= minimum, else argparse's error naming the option (the benchmark
    programs' counts, threads and durations; 0 rounds printed tables of nan, 0 threads a traceback)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") \
                from None
        if not value >= minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum:g}, got {text}")
        return value

    return parse


_BROKEN: Dict[str, str] = {}  # modules that are installed but failed to import, and why (noted once)


def installed(module: str) -> bool:
    """Whether the module is installed and imports: one that is installed but fails to import (a broken
    install, a missing shared library) counts as missing, with a note on stderr the first time."""
    if importlib.util.find_spec(module) is None:
        return False
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 (anything its import raises makes it unusable)
        if module not in _BROKEN:
            _BROKEN[module] = f"{type(exc).__name__}: {exc}"
            print(f"note: {module} is installed but does not import ({_BROKEN[module]})", file=sys.stderr)
        return False
    return True


def available(peer: str) -> bool:
    """Whether every module the peer needs (PEER_NEEDS) is installed and imports."""
    return all(installed(module) for module in PEER_NEEDS[peer])


def peer_label(name: str) -> str:
    """A runner's name with the version of its library after the library's name: "openvino 2026.4.1 f32";
    fastlstm's own runners as they are."""
    library, _, rest = name.partition(" ")
    if library not in {peer.split(" ")[0] for peer in PEER_NEEDS}:
        return name
    return " ".join(part for part in (library, version_of(library), rest) if part)


def version_of(distribution: str) -> str:
    """The installed version of a distribution, or "" when its metadata is absent."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return ""


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


# Seconds for NumPy's BLAS threads to go idle after measure_sgemm_gflops (OpenBLAS's spin for ~0.1 s).
BLAS_SETTLE_S = 0.5
# Pause before each block of calls. Measured on the 2-core test machine (T=100, B=1, I=128, H=256, 2 layers,
# bidirectional, fastlstm beside onnxruntime 1.31): after a 20 ms pause fastlstm took 4.2-6.6 ms, after 50 ms
# and more 2.4-2.6 ms (its time alone); onnxruntime's and torch's times were the same either way.
PAUSE_S = 0.05


def time_rounds(runners: Dict[str, Callable[[], object]], seconds: float, min_rounds: int) -> Dict[str, Timing]:
    """Times of one call of each runner, over rotating blocks of calls.

    Runners take turns in blocks of about 50 ms (A A A B B B C C C A A A ...), so slow drifts of the machine
    hit all alike. Before each block the bench pauses for PAUSE_S and makes one uncounted call: the previous
    runner's thread pool may still be spinning on the cores (onnxruntime's and torch's do, for a while after
    each call), and a team of threads that meets every step cannot run beside it.
    """
    rounds: Dict[str, List[List[float]]] = {name: [] for name in runners}
    blocks: Dict[str, int] = {}
    for name, run in runners.items():
        t0 = time.perf_counter()
        run()
        blocks[name] = int(min(200, max(3, 0.05 / max(time.perf_counter() - t0, 1e-7))))
    start = time.perf_counter()
    n = 0
    while n < min_rounds or (time.perf_counter() - start < seconds and n < 500):
        for name, run in runners.items():
            time.sleep(PAUSE_S)
            run()
            block = []
            for _ in range(blocks[name]):
                t0 = time.perf_counter()
                run()
                block.append(time.perf_counter() - t0)
            rounds[name].append(block)
        n += 1
    timings = {}
    for name, blocks_of_calls in rounds.items():
        calls = np.concatenate(blocks_of_calls)
        round_medians = [float(np.median(b)) for b in blocks_of_calls]
        q25, median, q75 = (float(q) for q in np.percentile(calls, [25, 50, 75]))
        timings[name] = Timing(median, q25, q75, min(round_medians), max(round_medians), int(calls.size))
    return timings


def time_interleaved(runners: Dict[str, Callable[[], object]], seconds: float, min_rounds: int) -> Dict[str, float]:
    """Median seconds of one call of each runner, timed as time_rounds does."""
    return {name: t.median for name, t in time_rounds(runners, seconds, min_rounds).items()}


def min_rounds(shape: Shape, quick: bool) -> int:
    """Rounds of time_rounds at least: a streaming step's blocks of calls are short, so it needs more rounds for
    the same care; --quick takes fewer."""
    if shape.streaming:
        return 15 if quick else 50
    return 3 if quick else 5


def bench_shape(shape: Shape, threads: int, seconds: float, with_reference: bool, quick: bool = False) -> Row:
    if shape.streaming:
        return bench_step(shape, threads, seconds, quick)
    rng = np.random.default_rng(0)
    model = LSTM(shape.I, shape.H, shape.layers, bidirectional=shape.bidirectional, seed=0)
    x = rng.standard_normal((shape.T, shape.B, shape.I)).astype(np.float32)
    runners: Dict[str, Callable[[np.ndarray], np.ndarray]] = {"fastlstm": lambda a: model(a)[0]}
    if with_reference:
        ref = ReferenceLSTM(shape.I, shape.H, shape.layers, bidirectional=shape.bidirectional, seed=0)
        runners["reference"] = lambda a: ref(a)[0]
    if available("torch"):
        runners["torch"] = _peers.torch_runner(model, threads)
    if available("onnxruntime"):
        runners["onnxruntime"] = _peers.ort_runner(model, threads)
    if available("openvino f32"):
        runners["openvino f32"] = _peers.openvino_runner(model, x.shape, threads, "f32")[0]
    row, probes = new_row(shape, model, threads)
    ours = runners["fastlstm"](x)
    for name, run in runners.items():
        if name != "fastlstm":
            row.max_abs_diff[name] = float(np.max(np.abs(run(x) - ours), initial=0.0))
    calls: Dict[str, Callable[[], object]] = {n: functools.partial(r, x) for n, r in runners.items()}
    finish_row(row, time_rounds({**calls, **probes.calls}, seconds, min_rounds(shape, quick)), probes)
    return row


def bench_step(shape: Shape, threads: int, seconds: float, quick: bool = False) -> Row:
    """One streaming step: fastlstm Stream.step(out=) vs torch (T=1, hx) vs onnxruntime (state in/out)."""
    rng = np.random.default_rng(0)
    model = LSTM(shape.I, shape.H, shape.layers, seed=0)
    xs = rng.standard_normal((8, shape.B, shape.I)).astype(np.float32)
    stream = model.stream(shape.B)
    out = np.empty((shape.B, model.out_size), np.float32)
    steppers: Dict[str, Callable[[np.ndarray], np.ndarray]] = {"fastlstm": lambda a: stream.step(a, out=out).copy()}
    steppers.update(peer_steppers(model, shape.B, threads))
    row, probes = new_row(shape, model, threads)
    # agreement over a few steps from the zero state; all steppers then keep running from there
    ours = np.stack([steppers["fastlstm"](x) for x in xs])
    for name, step in steppers.items():
        if name != "fastlstm":
            row.max_abs_diff[name] = float(np.max(np.abs(np.stack([step(x) for x in xs]) - ours)))
    steppers["fastlstm"] = lambda a: stream.step(a, out=out)
    x0 = xs[0]
    calls: Dict[str, Callable[[], object]] = {n: functools.partial(s, x0) for n, s in steppers.items()}
    finish_row(row, time_rounds({**calls, **probes.calls}, seconds, min_rounds(shape, quick)), probes)
    return row


def peer_steppers(model: LSTM, batch: int, threads: int) -> Dict[str, Callable[[np.ndarray], np.ndarray]]:
    """One streaming step of `model` in each installed peer, as users run them: torch nn.LSTM on T=1 with hx,
    onnxruntime and OpenVINO (f32, compiled for `batch`) with the state as graph inputs and outputs. Each takes
    x_t (B, I) and carries its own state."""
    steppers: Dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    if available("torch"):
        steppers["torch"] = _peers.torch_step_runner(model, threads)
    if available("onnxruntime"):
        steppers["onnxruntime"] = _peers.ort_step_runner(model, threads)
    if available("openvino f32"):
        steppers["openvino f32"] = _peers.openvino_step_runner(model, batch, threads, "f32")[0]
    return steppers


@dataclass
class LimitProbes:
    """Calls of the native probes that measure a row's limits, timed in the same interleaved rounds as the
    implementations (so that the slow and fast phases of a shared machine weigh on both alike), and what one
    call of each does."""
    calls: Dict[str, Callable[[], object]]
    read_bytes: float  # bytes one call of calls["read probe"] reads
    handoff_steps: int  # steps one call of calls["handoff probe"] hands over (absent when the row has none)


def new_row(shape: Shape, model: LSTM, threads: int) -> Tuple[Row, LimitProbes]:
    """The row of a shape before its timings, and the probes of its limits: reading one step's weights on
    `threads` threads, and handing a step between the threads fastlstm starts for it, if they meet every step
    (fewer threads for small work, see _threads)."""
    H, K, D = model.hidden_size, model.out_size, model.num_directions
    if shape.streaming:
        team = _threads.stream_threads(H, K, shape.I, shape.B)
    else:
        team = _threads.effective_threads(H, K, shape.B, D, steps=shape.T, input_size=shape.I)
    handoffs, handing = _probes.step_handoffs(model._packed, shape.T, shape.B, team)
    row = Row(shape.name, shape.flops() / 1e9, shape.weight_bytes() / 1e9, shape.B, handoffs=handoffs)
    read_call, read_bytes = read_probe(shape.step_weight_bytes(), threads)
    probes = LimitProbes({"read probe": read_call}, read_bytes, HANDOFF_PROBE_STEPS)
    if handoffs:
        probes.calls["handoff probe"] = handoff_probe(handing)
    return row, probes


def finish_row(row: Row, timings: Dict[str, Timing], probes: LimitProbes) -> None:
    """Fill the row from the times per call of its implementations and its probes."""
    for name, t in timings.items():
        if name not in probes.calls:
            row.median_ms[name] = 1e3 * t.median
            row.spread_ms[name] = (1e3 * t.q25, 1e3 * t.q75)
            row.fastest_round_ms[name] = 1e3 * t.fastest_round
    row.read_gbps = probes.read_bytes / timings["read probe"].median / 1e9
    if "handoff probe" in probes.calls:
        row.handoff_us = 1e6 * timings["handoff probe"].median / probes.handoff_steps


def measure_fma_gflops(threads: int) -> float:
    """This machine's arithmetic ceiling: GFLOP/s of independent float32 vector FMAs on `threads` threads with
    the kernels' instruction set (_probes.probe_fma). No matrix product, ours or a BLAS's, can beat it."""
    rounds = 100_000  # ~0.2 ms per call at 250 GFLOP/s per core
    isa = probe_isa()
    flops = _probes.probe_fma(rounds, threads, isa)[1]
    return flops / time_interleaved({"fma": lambda: _probes.probe_fma(rounds, threads, isa)}, 0.3, 5)["fma"] / 1e9


def read_probe(nbytes: float, threads: int) -> Tuple[Callable[[], object], float]:
    """A call of `threads` threads reading a float32 buffer of about nbytes over and over, each its own share
    (_probes.probe_read), the way the steps of a forward read their slices of the weights: from L1, L2 or L3
    according to the size; and the bytes it reads."""
    granule = _probes.probe_read_granule()
    n = max(granule, int(nbytes) // 4 // granule * granule)
    data = _aligned_empty((n,), np.dtype(np.float32))
    data.fill(1.0)
    # >= ~32 MB per call (fewer measured up to 30% less on 4 MB: the call and its first pass weigh); an even
    # count, so that every call (forwards first) starts where the one before ended (backwards)
    passes = 2 * max(1, int(16e6 // (4 * n)))
    isa = probe_isa()
    return (lambda: _probes.probe_read(data, passes, threads, isa)), 4.0 * n * passes


# Steps per call of the hand-off probe: ~0.1-0.6 ms on the 2-core test machine.
HANDOFF_PROBE_STEPS = 2000


def handoff_probe(threads: int) -> Callable[[], object]:
    """A call of `threads` threads handing HANDOFF_PROBE_STEPS empty time steps to each other, as a forward's
    threads end every step (_probes.probe_handoff): each writes one cache line of h, publishes its step,
    waits for the others' and reads their lines. It times the latency of a hand-off, not its bandwidth: a
    forward moving more of h between cores may overlap that with its work, but no step can start before the
    previous one has arrived."""
    isa = probe_isa()
    return lambda: _probes.probe_handoff(HANDOFF_PROBE_STEPS, 16 * threads, threads, isa)


def measure_sgemm_gflops() -> float:
    """NumPy's BLAS on a large square float32 product, for comparison (printed, not a limit: on the project's
    machine it reached less than half the FMA peak)."""
    n = 1536
    a = np.ones((n, n), np.float32)
    return 2 * n**3 / time_interleaved({"gemm": lambda: a @ a}, seconds=0.3, min_rounds=5)["gemm"] / 1e9


def limit_fraction(row: Row, fma_gflops: float) -> Tuple[float, str]:
    """How close a row came to this machine's limit, and which limits bind: the roofline time of its work is
    the larger of its FLOPs at the FMA peak and its weight bytes at the read bandwidth of one step's weights;
    when its threads hand every step to each other, the hand-offs come on top (no step's work can start
    before the previous step's h has arrived)."""
    fma_ms = row.gflop / fma_gflops * 1e3
    read_ms = row.weight_gb / row.read_gbps * 1e3
    bound_ms, bound = (fma_ms, "FMA") if fma_ms >= read_ms else (read_ms, "read")
    if row.handoffs:
        bound_ms += row.handoffs * row.handoff_us * 1e-3
        bound += "+handoff"
    return bound_ms / row.median_ms["fastlstm"], bound


class Timed(Protocol):
    """A measured row of any section: median ms per runner, and the median call of each one's fastest round."""

    median_ms: Dict[str, float]
    fastest_round_ms: Dict[str, float]


def disturbed(row: Timed, name: str) -> bool:
    """Whether `name`'s median call on this row is implausibly slow: ROUND_SPREAD_LIMIT times its fastest round
    or more (a stall of the machine or of the implementation's thread pool, not its speed)."""
    fastest = row.fastest_round_ms.get(name)
    return fastest is not None and row.median_ms[name] >= ROUND_SPREAD_LIMIT * fastest


def ratio(row: Timed, peer: str, ours: str = "fastlstm") -> Optional[float]:
    """The peer's median time over ours on this row; None when either is absent or its time disturbed."""
    if any(name not in row.median_ms or disturbed(row, name) for name in (peer, ours)):
        return None
    return row.median_ms[peer] / row.median_ms[ours]


def fastest_row(rows: List[Row]) -> Tuple[Row, float]:
    """The row with the most GFLOP/s, and its GFLOP/s."""
    best = max(rows, key=lambda r: r.gflop / r.median_ms["fastlstm"])
    return best, best.gflop / best.median_ms["fastlstm"] * 1e3


def peak_plausible(rows: List[Row], fma_gflops: float) -> bool:
    """Whether the FMA peak probe's result can be a limit: no row ran faster than LIMIT_SLACK times it."""
    return fastest_row(rows)[1] <= LIMIT_SLACK * fma_gflops


def warnings_for(rows: List[Row], fma_gflops: Optional[float]) -> List[str]:
    """What cannot be right in these measurements, one sentence each (the table shows "?" there, or leaves the
    % of limit out when the FMA peak itself cannot be right)."""
    found = []
    if fma_gflops and not peak_plausible(rows, fma_gflops):
        best, achieved = fastest_row(rows)
        found.append(f"the FMA peak probe measured {fma_gflops:.0f} GFLOP/s, but the row '{best.shape}' reached "
                     f"{achieved:.0f}: the probe was slowed down (a busy machine?), so % of limit is not shown")
        fma_gflops = None
    for r in rows:
        for name in r.median_ms:
            if disturbed(r, name):
                found.append(f"{r.shape}: {name}'s median call ({format_ms(r.median_ms[name])} ms) is "
                             f"{r.median_ms[name] / r.fastest_round_ms[name]:.0f}x its fastest round's "
                             f"({format_ms(r.fastest_round_ms[name])} ms): it stalled, its ratios are not shown")
        if fma_gflops and not disturbed(r, "fastlstm"):
            fraction, bound = limit_fraction(r, fma_gflops)
            if fraction > LIMIT_SLACK:
                found.append(f"{r.shape}: the row ran at {100 * fraction:.0f}% of its {bound} limit: a probe of "
                             f"the limit was slowed down (read {r.read_gbps:.0f} GB/s"
                             + (f", hand-off {1e3 * r.handoff_us:.0f} ns" if r.handoffs else "")
                             + "), so its % of limit is not shown")
    return found


def format_ms(ms: float) -> str:
    """Milliseconds with 3 significant digits (4 decimals below 0.01 ms, where calls take microseconds; no
    exponent above 1000 ms)."""
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}" if ms >= 0.01 else f"{ms:.4f}"


def _shapes(n: int) -> str:
    return f"{n} shape{'s' * (n != 1)}"


class Spread(Timed, Protocol):
    """A measured row with the 25th and 75th percentiles of each runner's calls."""

    spread_ms: Dict[str, Tuple[float, float]]


def timing_cell(row: Spread, name: str) -> str:
    """A runner's median ms with the 25th-75th percentile of its calls, "?" after it when disturbed; "-" when the
    row has no time of it."""
    if name not in row.median_ms:
        return "-"
    lo, hi = row.spread_ms.get(name, (row.median_ms[name], row.median_ms[name]))
    cell = f"{format_ms(row.median_ms[name])} ({format_ms(lo)}-{format_ms(hi)})"
    return cell + (" ?" if disturbed(row, name) else "")


def markdown_table(lines: Sequence[Sequence[str]]) -> str:
    """A Markdown table of these cells, columns padded to their widest cell; lines[0] is the head."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for k, line in enumerate(lines):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |")
        if k == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def format_table(rows: List[Row], fma_gflops: Optional[float] = None) -> str:
    """The details: per row, each implementation's median ms with the 25th-75th percentile of its calls, and
    fastlstm's speed ratio over each other implementation ("?" where a number cannot be right)."""
    present = [p for p in PEERS + ("reference",) if any(p in r.median_ms for r in rows)]
    head = ["shape", "fastlstm ms", "GFLOP/s", "weights GB/s"] + (["% of limit"] if fma_gflops else [])
    head += [f"{p} ms" for p in present] + [f"x vs {p}" for p in present]
    lines = [head]
    for r in rows:
        ours = r.median_ms["fastlstm"]
        cells = [r.shape, timing_cell(r, "fastlstm"), f"{r.gflop / ours * 1e3:.1f}", f"{r.weight_gb / ours * 1e3:.0f}"]
        if fma_gflops:
            fraction, bound = limit_fraction(r, fma_gflops)
            plausible = fraction <= LIMIT_SLACK and not disturbed(r, "fastlstm")
            cells.append(f"{100 * fraction:.0f}% {bound}" if plausible else "?")
        cells += [timing_cell(r, p) for p in present]
        for p in present:
            x = ratio(r, p)
            cells.append("-" if p not in r.median_ms else "?" if x is None else f"{x:.2f}")
        lines.append(cells)
    return markdown_table(lines)


def format_summary(rows: List[Row]) -> List[str]:
    """Per implementation compared: fastlstm's median speed ratio over the rows (and their range), and the
    largest difference of the outputs."""
    lines = []
    for name in PEERS + ("reference",):
        diffs = [r.max_abs_diff[name] for r in rows if name in r.max_abs_diff]
        if not diffs:
            continue
        agree = f"outputs agree within {max(diffs):.1e}"
        if max(diffs) > AGREEMENT:
            agree = f"outputs DISAGREE: max |difference| {max(diffs):.1e} > {AGREEMENT:.0e}"
        if name == "reference":
            lines.append(f"vs the NumPy reference: {agree} ({_shapes(len(diffs))})")
            continue
        ratios = [x for x in (ratio(r, name) for r in rows) if x is not None]
        label = f"vs {peer_label(name)}"
        if not ratios:
            lines.append(f"{label}: no plausible timing (see the warnings); {agree}")
            continue
        median = float(np.median(ratios))
        speed = f"{median:.2f}x faster" if median >= 1 else f"{1 / median:.2f}x slower"
        lines.append(f"{label}: fastlstm {speed} (median of {_shapes(len(ratios))}: {min(ratios):.2f}x to "
                     f"{max(ratios):.2f}x); {agree}")
    return lines


def plot_title(threads: int) -> str:
    return f"fastlstm {__version__} speed-up ({cpu_model()}, {threads} thread{'s' * (threads != 1)})"


@dataclass
class Panel:
    """One section of the plot: its rows' names and, per series (a peer or a comparison), a ratio per row."""

    title: str
    shapes: List[str]
    series: Dict[str, List[Optional[float]]]  # legend label -> ratio per row (None: no plausible ratio)


def f32_panel(rows: List[Row]) -> Panel:
    """The float32 section's panel: fastlstm's speed-up over each peer with a plausible ratio."""
    series = {f"vs {peer_label(p)}": [ratio(r, p) for r in rows] for p in PEERS}
    return Panel(f"{F32_HEADING} (f32)", [r.shape for r in rows], series)


def plot(panels: List[Panel], path: str, threads: int) -> bool:
    """Draw the panels' ratios (log scale) to `path`; False (and nothing drawn) when no panel has a plausible
    ratio."""
    fig = figure(panels, threads)
    if fig is None:
        return False
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return True


def figure(panels: List[Panel], threads: int) -> Any:
    """The matplotlib figure of the ratios, one panel per section stacked (each on a log scale with its own
    series of bars from 1, the same speed), titled with the machine and the thread count; None when no series
    has a plausible ratio. Series without one are left out."""
    shown = []
    for panel in panels:
        series = {k: v for k, v in panel.series.items() if any(x is not None for x in v)}
        if series:
            shown.append(Panel(panel.title, panel.shapes, series))
    if not shown:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    heights = [len(p.shapes) * (0.25 * len(p.series) + 0.2) + 0.9 for p in shown]
    fig, axes = plt.subplots(len(shown), 1, figsize=(10, sum(heights) + 0.8), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, panel in zip(axes[:, 0], shown):
        ys = np.arange(len(panel.shapes))
        height = 0.8 / len(panel.series)
        for k, (label, ratios) in enumerate(panel.series.items()):
            # bars from 1 (same speed): rightwards where fastlstm is faster, leftwards where it is slower
            widths = [np.nan if x is None else x - 1.0 for x in ratios]
            bars = ax.barh(ys + k * height, widths, height, left=1.0, label=label)
            for bar, x in zip(bars, ratios):
                if x is not None:
                    right = x >= 1
                    ax.annotate(f"{x:.2f}x", (x, bar.get_y() + bar.get_height() / 2), va="center", fontsize=8,
                                xytext=(3 if right else -3, 0), textcoords="offset points",
                                ha="left" if right else "right")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_yticks(ys + height * (len(panel.series) - 1) / 2)
        ax.set_yticklabels(panel.shapes)
        ax.invert_yaxis()
        ax.margins(x=0.15)
        ax.set_title(panel.title, fontsize=10)
        ax.legend(fontsize=8, loc="best")
    axes[-1, 0].set_xlabel("the other's time / fastlstm's time (log scale; > 1: fastlstm is faster)")
    fig.suptitle(plot_title(threads), fontsize=11)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.45 / (sum(heights) + 0.8)))   # room for the figure's title
    return fig


def check_output_paths(plot_path: Optional[str], json_path: Optional[str]) -> None:
    """Refuse, before anything runs, output paths that cannot be written: ValueError naming the option."""
    for option, path in (("--plot", plot_path), ("--json", json_path)):
        if path is None:
            continue
        if not path:
            raise ValueError(f"{option}: give a file name")
        directory = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise ValueError(f"{option}: {path!r} is a directory; give a file name")
        if not os.path.isdir(directory):
            raise ValueError(f"{option}: the directory {directory!r} does not exist")
        existed = os.path.exists(path)
        try:  # opened for real: os.access says "writable" to root, also of /proc
            with open(path, "a"):
                pass
        except OSError as exc:
            raise ValueError(f"{option}: {path!r} is not writable ({exc.strerror or exc})") from exc
        if not existed:
            os.remove(path)
    if plot_path is not None:
        if not plot_path.lower().endswith(".png"):
            raise ValueError(f"--plot: the file name must end in .png, got {plot_path!r}")
        if not installed("matplotlib"):
            raise ValueError("--plot needs matplotlib: pip install matplotlib")


SECTION_NAMES = ("f32", "quant", "gru", "models")  # in the order they run and print
F32_HEADING = "float32 LSTM"
F32_TITLE = "float32 LSTM: fastlstm beside torch.nn.LSTM, onnxruntime, OpenVINO (f32) and the NumPy reference"


def parse_only(text: str) -> List[str]:
    """--only's comma-separated section names, in the bench's order; ValueError naming the unknown ones."""
    asked = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in asked if name not in SECTION_NAMES]
    if unknown or not asked:
        given = ", ".join(repr(name) for name in unknown) if unknown else repr(text)
        raise ValueError(f"--only: unknown section {given}; choose from {', '.join(SECTION_NAMES)} "
                         "(comma-separated)")
    return [name for name in SECTION_NAMES if name in asked]


@dataclass
class F32Result:
    """The float32 section's measurements: rows, the machine's measured limits and what cannot be right."""

    rows: List[Row]
    fma_gflops: float
    sgemm_gflops: float
    warnings: List[str]


def measure_f32(shapes: List[Shape], threads: int, seconds: float, quick: bool) -> F32Result:
    """Time the float32 shapes (and the machine's limits), printing progress."""
    fma = measure_fma_gflops(threads)
    rows = []
    for shape in shapes:
        with_reference = shape.T * shape.B * shape.H <= 100 * 4 * 256
        rows.append(bench_shape(shape, threads, seconds, with_reference, quick))
        print(f"  measured f32: {shape.name}", flush=True)
    # NumPy's BLAS last, and time for its threads to stop: OpenBLAS's idle threads keep taking the cores for a
    # while after a product (measured first, it put the first rows' fastlstm calls on one thread: their
    # teams found members late, rightly, and stopped meeting; see DESIGN, "Threads")
    sgemm = measure_sgemm_gflops()
    time.sleep(BLAS_SETTLE_S)
    return F32Result(rows, fma, sgemm, warnings_for(rows, fma))


def print_f32_details(result: F32Result) -> None:
    rows, fma = result.rows, result.fma_gflops
    peak_ok = peak_plausible(rows, fma)
    print(format_table(rows, fma if peak_ok else None))
    if peak_ok:
        print(f"% of limit: the row's time at this machine's limit over its time. The limit is its FLOPs at the "
              f"FMA peak ({fma:.0f} GFLOP/s measured, {probe_isa()})")
        print("or its weight bytes at the speed of reading a buffer of one step's weights, whichever is slower,")
        print("plus, where the threads hand every step to each other, the measured cost of each hand-off.")
    print(f"NumPy's sgemm, for comparison: {result.sgemm_gflops:.0f} GFLOP/s")
    print("max |fastlstm - other| of the outputs:")
    for r in rows:
        print(f"  {r.shape}: " + ", ".join(f"{p} {d:.1e}" for p, d in r.max_abs_diff.items()))


def run(
    quick: bool = False,
    threads: Optional[int] = None,
    plot_path: Optional[str] = None,
    json_path: Optional[str] = None,
    only: Optional[Sequence[str]] = None,
) -> Dict[str, List[Any]]:
    """Run the bench's sections (`only`: these of SECTION_NAMES, default all) and print their report; returns
    each section's rows by name (a section that could not run is absent). SystemExit when outputs disagree
    (ValueError for bad paths or section names)."""
    from . import _bench_sections

    check_output_paths(plot_path, json_path)
    names = list(SECTION_NAMES) if only is None else parse_only(",".join(only))
    if threads is not None:
        _threads.set_num_threads(threads)
    n = _threads.get_num_threads()
    seconds = 0.3 if quick else 2.0
    f32_shapes = QUICK_SHAPES if quick else SHAPES
    sections, skipped = [], {}
    for section in _bench_sections.SECTIONS:
        needed = _bench_sections.SECTION_NEEDS.get(section.name)
        if section.name not in names:
            continue
        if needed is not None and not installed(needed):
            skipped[section.name] = f"{needed} is not installed"
        else:
            sections.append(section)
    counts = ([f"f32 ({_shapes(len(f32_shapes))})"] if "f32" in names else []) + [
        f"{s.name} ({_shapes(len(s.shape_names(quick)))})" for s in sections]
    if not counts:   # every section asked for needs what is missing
        raise SystemExit("fastlstm bench: nothing to run: " + "; ".join(
            f"section {name} skipped: {why}" for name, why in skipped.items()))
    machine = f"{cpu_model()}, {n} thread{'s' * (n != 1)}"
    print(f"fastlstm {__version__} bench{' --quick' if quick else ''}: {machine}; sections {', '.join(counts)}")
    for name, why in skipped.items():
        print(f"section {name} skipped: {why}")
    peers = (list(PEERS) if "f32" in names else []) + [p for s in sections for p in s.peers]
    missing = [p for p in dict.fromkeys(peers) if not available(p)]
    if missing:
        print(f"not installed, not compared: {', '.join(missing)}")

    f32 = measure_f32(f32_shapes, n, seconds, quick) if "f32" in names else None
    measured: Dict[str, List[_bench_sections.SectionRow]] = {}
    notes: Dict[str, List[str]] = {}
    for section in sections:
        measured[section.name], notes[section.name] = [], []
        for case in section.cases(quick, n):
            measured[section.name].append(_bench_sections.measure(section, case, seconds))
            if case.note and case.note not in notes[section.name]:
                notes[section.name].append(case.note)
            print(f"  measured {section.name}: {case.name}", flush=True)
    warnings = list(f32.warnings) if f32 else []
    for section in sections:
        for r in measured[section.name]:
            for name in r.median_ms:
                if disturbed(r, name):
                    warnings.append(f"{section.name}, {r.shape}: {name}'s median call ({format_ms(r.median_ms[name])}"
                                    f" ms) is {r.median_ms[name] / r.fastest_round_ms[name]:.0f}x its fastest round's:"
                                    " it stalled, its ratios are not shown")

    print()
    print("Summary")
    if f32:
        print(f"  {F32_HEADING} (f32)")
        for line in format_summary(f32.rows):
            print(f"    {line}")
    for section in sections:
        print(f"  {section.heading} ({section.name})")
        for line in _bench_sections.summary(section, measured[section.name]):
            print(f"    {line}")
    for name, why in skipped.items():
        print(f"  section {name} not run: {why}")
    if missing:
        print(f"  not compared (not installed): {', '.join(missing)}")
    if warnings:
        print(f"  {len(warnings)} warning{'s' * (len(warnings) != 1)} below: numbers of this run that cannot be "
              "right are left out (a busy machine?)")
    print()
    print("Details (times: median ms of the calls, with the 25th-75th percentile in brackets; x vs P and the")
    print("sections' ratios: the other's median time over fastlstm's)")
    if f32:
        print()
        print(f"{F32_TITLE} (f32)")
        print_f32_details(f32)
    for section in sections:
        print()
        print(f"{section.title} ({section.name}); diff: {section.diff_heading}")
        print(_bench_sections.table(section, measured[section.name]))
        for note in notes[section.name]:
            print(note)
    if warnings:
        print()
        print("Warnings")
        for w in warnings:
            print(f"  {w}")
    results: Dict[str, List[Any]] = {**({"f32": f32.rows} if f32 else {}), **measured}
    if json_path:
        report: Dict[str, Any] = {"version": __version__, "cpu": cpu_model(), "threads": n, "quick": quick,
                                  "warnings": warnings, "not_installed": missing, "skipped": skipped, "sections": {}}
        if f32:
            report["sections"]["f32"] = {"title": F32_TITLE, "fma_gflops": f32.fma_gflops,
                                         "sgemm_gflops": f32.sgemm_gflops, "rows": [asdict(r) for r in f32.rows]}
        for section in sections:
            report["sections"][section.name] = {
                "title": section.title, "diff": section.diff_heading, "notes": notes[section.name],
                "ratios": {label: [slower, faster] for label, slower, faster in section.comparisons},
                "rows": [asdict(r) for r in measured[section.name]]}
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)
        print(f"measurements written to {json_path}")
    if plot_path:
        panels = ([f32_panel(f32.rows)] if f32 else []) + [
            Panel(f"{s.heading} ({s.name})", [r.shape for r in measured[s.name]],
                  {label: [r.ratios[label] for r in measured[s.name]] for label, _, _ in s.comparisons})
            for s in sections]
        if plot(panels, plot_path, n):
            print(f"plot written to {plot_path}")
        else:
            print("no plot written: no section has a plausible ratio to draw (for the float32 section's peers: "
                  "pip install onnx onnxruntime openvino, and torch's CPU build: pip install torch --index-url "
                  "https://download.pytorch.org/whl/cpu)")
    worst = max([0.0] + [d for r in (f32.rows if f32 else []) for d in r.max_abs_diff.values()])
    worst = max([worst] + [_bench_sections.disagreement(s, measured[s.name]) for s in sections])
    if worst > AGREEMENT:
        raise SystemExit(f"outputs disagree: max abs difference {worst:.2e} > {AGREEMENT:.0e}")
    return results
