"""``python -m fastlstm bench``: fastlstm against the reference and the installed peers, in one run.

For every built-in shape, all implementations get the same weights and input; their outputs are checked to
agree, then they are timed in interleaved rounds (one call of each per round, so machine noise hits all
alike) and the medians and ratios printed. Peers run as their users run them: torch under inference_mode,
onnxruntime with one LSTM node per layer; all with the same thread count.
"""
from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from . import _cpu, _peers, _probes, _threads
from ._lstm import LSTM
from ._packing import _aligned_empty
from .reference import LSTM as ReferenceLSTM


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
class Row:
    shape: str
    gflop: float
    weight_gb: float
    batch: int
    read_gbps: float = 0.0  # this machine reading a buffer of one step's weights (read_probe), same threads
    handoffs: int = 0  # time steps handed from thread to thread on the critical path (_probes.step_handoffs)
    handoff_us: float = 0.0  # this machine handing one step between those threads (handoff_probe)
    median_ms: Dict[str, float] = field(default_factory=dict)
    max_abs_diff: Dict[str, float] = field(default_factory=dict)



def probe_isa() -> str:
    """The instruction set of the float32 LSTM kernels models are packed for now: the probes run on it."""
    return _cpu.kernels_for("lstm", np.dtype(np.float32))[0].rsplit("/", 1)[1]

def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# Pause before each block of calls. Measured on the 2-core test machine (T=100, B=1, I=128, H=256, 2 layers,
# bidirectional, fastlstm beside onnxruntime 1.31): after a 20 ms pause fastlstm took 4.2-6.6 ms, after 50 ms
# and more 2.4-2.6 ms (its time alone); onnxruntime's and torch's times were the same either way.
PAUSE_S = 0.05


def time_interleaved(runners: Dict[str, Callable[[], object]], seconds: float, min_rounds: int) -> Dict[str, float]:
    """Median seconds of one call of each runner, over rotating blocks of calls.

    Runners take turns in blocks of about 50 ms (A A A B B B C C C A A A ...), so slow drifts of the machine
    hit all alike. Before each block the bench pauses for PAUSE_S and makes one uncounted call: the previous
    runner's thread pool may still be spinning on the cores (onnxruntime's and torch's do, for a while after
    each call), and a team of threads that meets every step cannot run beside it.
    """
    samples: Dict[str, List[float]] = {name: [] for name in runners}
    blocks: Dict[str, int] = {}
    for name, run in runners.items():
        t0 = time.perf_counter()
        run()
        blocks[name] = int(min(200, max(3, 0.05 / max(time.perf_counter() - t0, 1e-7))))
    start = time.perf_counter()
    rounds = 0
    while min(len(s) for s in samples.values()) < min_rounds or (time.perf_counter() - start < seconds and rounds < 500):
        for name, run in runners.items():
            time.sleep(PAUSE_S)
            run()
            for _ in range(blocks[name]):
                t0 = time.perf_counter()
                run()
                samples[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: float(np.median(s)) for name, s in samples.items()}


def bench_shape(shape: Shape, threads: int, seconds: float, with_reference: bool) -> Row:
    if shape.streaming:
        return bench_step(shape, threads, seconds)
    rng = np.random.default_rng(0)
    model = LSTM(shape.I, shape.H, shape.layers, bidirectional=shape.bidirectional, seed=0)
    x = rng.standard_normal((shape.T, shape.B, shape.I)).astype(np.float32)
    runners: Dict[str, Callable[[np.ndarray], np.ndarray]] = {"fastlstm": lambda a: model(a)[0]}
    if with_reference:
        ref = ReferenceLSTM(shape.I, shape.H, shape.layers, bidirectional=shape.bidirectional, seed=0)
        runners["reference"] = lambda a: ref(a)[0]
    if installed("torch"):
        runners["torch"] = _peers.torch_runner(model, threads)
    if installed("onnxruntime") and installed("onnx"):
        runners["onnxruntime"] = _peers.ort_runner(model, threads)
    row, probes = new_row(shape, model, threads)
    ours = runners["fastlstm"](x)
    for name, run in runners.items():
        if name != "fastlstm":
            row.max_abs_diff[name] = float(np.max(np.abs(run(x) - ours), initial=0.0))
    calls = {n: (lambda r=r: r(x)) for n, r in runners.items()}
    finish_row(row, time_interleaved({**calls, **probes.calls}, seconds, min_rounds=5), probes)
    return row


def bench_step(shape: Shape, threads: int, seconds: float) -> Row:
    """One streaming step: fastlstm Stream.step(out=) vs torch (T=1, hx) vs onnxruntime (state in/out)."""
    rng = np.random.default_rng(0)
    model = LSTM(shape.I, shape.H, shape.layers, seed=0)
    xs = rng.standard_normal((8, shape.B, shape.I)).astype(np.float32)
    stream = model.stream(shape.B)
    out = np.empty((shape.B, model.out_size), np.float32)
    steppers: Dict[str, Callable[[np.ndarray], np.ndarray]] = {"fastlstm": lambda a: stream.step(a, out=out).copy()}
    steppers.update(peer_steppers(model, threads))
    row, probes = new_row(shape, model, threads)
    # agreement over a few steps from the zero state; all steppers then keep running from there
    ours = np.stack([steppers["fastlstm"](x) for x in xs])
    for name, step in steppers.items():
        if name != "fastlstm":
            row.max_abs_diff[name] = float(np.max(np.abs(np.stack([step(x) for x in xs]) - ours)))
    steppers["fastlstm"] = lambda a: stream.step(a, out=out)
    x0 = xs[0]
    calls = {n: (lambda s=s: s(x0)) for n, s in steppers.items()}
    finish_row(row, time_interleaved({**calls, **probes.calls}, seconds, min_rounds=50), probes)
    return row


def peer_steppers(model: LSTM, threads: int) -> Dict[str, Callable[[np.ndarray], np.ndarray]]:
    """One streaming step of `model` in each installed peer, as users run them: torch nn.LSTM on T=1 with hx,
    onnxruntime with the state as graph inputs and outputs. Each takes x_t (B, I) and carries its own state."""
    steppers: Dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    if installed("torch"):
        steppers["torch"] = _peers.torch_step_runner(model, threads)
    if installed("onnxruntime") and installed("onnx"):
        steppers["onnxruntime"] = _peers.ort_step_runner(model, threads)
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


def finish_row(row: Row, medians: Dict[str, float], probes: LimitProbes) -> None:
    """Fill the row from the median seconds per call of its implementations and its probes."""
    row.median_ms = {name: 1e3 * t for name, t in medians.items() if name not in probes.calls}
    row.read_gbps = probes.read_bytes / medians["read probe"] / 1e9
    if "handoff probe" in probes.calls:
        row.handoff_us = 1e6 * medians["handoff probe"] / probes.handoff_steps


def measure_fma_gflops(threads: int) -> float:
    """This machine's arithmetic ceiling: GFLOP/s of independent float32 vector FMAs on `threads` threads with
    the kernels' instruction set (_probes.probe_fma). No matrix product, ours or a BLAS's, can beat it."""
    rounds = 100_000  # ~0.2 ms per call at 250 GFLOP/s per core
    flops = _probes.probe_fma(rounds, threads, probe_isa())[1]
    return flops / time_interleaved({"fma": lambda: _probes.probe_fma(rounds, threads, probe_isa())}, 0.3, 5)["fma"] / 1e9


def read_probe(nbytes: float, threads: int) -> Tuple[Callable[[], object], float]:
    """A call of `threads` threads reading a float32 buffer of about nbytes over and over, each its own share
    (_probes.probe_read), the way the steps of a forward read their slices of the weights: from L1, L2 or L3
    according to the size; and the bytes it reads."""
    granule = _probes.probe_read_granule()
    n = max(granule, int(nbytes) // 4 // granule * granule)
    data = _aligned_empty((n,), np.float32)
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


def format_table(rows: List[Row], fma_gflops: Optional[float] = None) -> str:
    peers = ["onnxruntime", "torch", "reference"]
    present = [p for p in peers if any(p in r.median_ms for r in rows)]
    head = ["shape", "fastlstm ms", "GFLOP/s", "weights GB/s"] + (["% of limit"] if fma_gflops else [])
    head += [f"{p} ms" for p in present] + [f"x vs {p}" for p in present]
    lines = [head]
    for r in rows:
        ours = r.median_ms["fastlstm"]
        cells = [r.shape, f"{ours:.4f}", f"{r.gflop / ours * 1e3:.1f}", f"{r.weight_gb / ours * 1e3:.0f}"]
        if fma_gflops:
            fraction, bound = limit_fraction(r, fma_gflops)
            cells.append(f"{100 * fraction:.0f}% {bound}")
        cells += [f"{r.median_ms[p]:.4f}" if p in r.median_ms else "-" for p in present]
        cells += [f"{r.median_ms[p] / ours:.2f}" if p in r.median_ms else "-" for p in present]
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for k, line in enumerate(lines):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |")
        if k == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def plot(rows: List[Row], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = [p for p in ("onnxruntime", "torch") if any(p in r.median_ms for r in rows)]
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(rows) + 1.5))
    ys = np.arange(len(rows))
    height = 0.8 / max(1, len(peers))
    for k, p in enumerate(peers):
        ratios = [r.median_ms.get(p, np.nan) / r.median_ms["fastlstm"] for r in rows]
        ax.barh(ys + k * height, ratios, height, label=f"{p} time / fastlstm time")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(ys + height * (len(peers) - 1) / 2, [r.shape for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("speed-up of fastlstm (higher is better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run(
    quick: bool = False,
    threads: Optional[int] = None,
    plot_path: Optional[str] = None,
    json_path: Optional[str] = None,
) -> List[Row]:
    if plot_path is not None and not installed("matplotlib"):
        raise SystemExit("--plot needs matplotlib: pip install matplotlib")
    if threads is not None:
        _threads.set_num_threads(threads)
    n = _threads.get_num_threads()
    shapes = QUICK_SHAPES if quick else SHAPES
    seconds = 0.3 if quick else 2.0
    missing = [p for p in ("torch", "onnxruntime") if not installed(p)]
    print(f"fastlstm bench: float32, {n} thread(s), medians of interleaved rounds")
    if missing:
        print(f"(not installed, not compared: {', '.join(missing)})")
    fma = measure_fma_gflops(n)
    sgemm = measure_sgemm_gflops()
    print(f"measured FMA peak: {fma:.0f} GFLOP/s ({n} threads, {probe_isa()}); NumPy's sgemm: {sgemm:.0f}")
    rows = []
    for shape in shapes:
        with_reference = shape.T * shape.B * shape.H <= 100 * 4 * 256
        rows.append(bench_shape(shape, n, seconds, with_reference))
        print(f"  {shape.name}: done", flush=True)
    print()
    print(format_table(rows, fma))
    print("% of limit: the row's time at this machine's limit over its time. The limit is its FLOPs at the FMA")
    print("peak or its weight bytes at the speed of reading a buffer of one step's weights, whichever is slower,")
    print("plus, where the threads hand every step to each other, the measured cost of each hand-off.")
    print()
    print("max |fastlstm - peer| of the outputs:")
    worst = 0.0
    for r in rows:
        diffs = ", ".join(f"{p} {d:.1e}" for p, d in r.max_abs_diff.items())
        print(f"  {r.shape}: {diffs}")
        worst = max([worst] + list(r.max_abs_diff.values()))
    if json_path:
        with open(json_path, "w") as f:
            summary = {"threads": n, "fma_gflops": fma, "sgemm_gflops": sgemm, "rows": [asdict(r) for r in rows]}
            json.dump(summary, f, indent=2)
    if plot_path:
        plot(rows, plot_path)
        print(f"plot written to {plot_path}")
    if worst > 2e-5:
        raise SystemExit(f"outputs disagree: max abs difference {worst:.2e} > 2e-5")
    return rows
