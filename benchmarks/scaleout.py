"""Throughput of a batch job in one process against Dask workers and Ray actors (one thread each), on this node.

    python benchmarks/scaleout.py [--sequences 1024] [--steps 100] [--input-size 128] [--hidden-size 256]
                                  [--chunk 32] [--repeats 3] [--frameworks dask,ray] [--quick]

The job (the examples' job): N sequences of a memory-mapped .npy file, in chunks of --chunk sequences, each
chunk run through the LSTM and reduced on the worker to one vector per sequence (the mean of its outputs over
time). Timed, best of --repeats runs of the whole job, after a warm-up run (workers started, model shipped):

- one process, fastlstm on 2 threads and on 1 thread, calling chunk after chunk;
- a distributed.LocalCluster of 1 and of 2 worker processes with one thread each (the nanny sets
  OMP_NUM_THREADS=1), dask.array.map_blocks with the model scattered to every worker;
- a local Ray with 1 and 2 actors of num_cpus=1 (Ray sets OMP_NUM_THREADS=1), the model shipped once per actor
  with ray.put, chunks handed out by ray.util.ActorPool.

Prints sequences per second, the ratio of 2 workers to 1 worker (target >= 1.7x) and of each row to the one
process on 2 threads. Every row's result is checked bitwise against the one process's for the same chunks.
"""
import argparse
import os
import tempfile
import time
from typing import Callable, Dict, List

import numpy as np

import fastlstm


def encode(chunk, model):
    """(b, T, I) -> (b, H_out): each sequence's outputs averaged over time."""
    out, _ = model(chunk)
    return out.mean(axis=1)


def best_of(run: Callable[[], np.ndarray], repeats: int):
    """(best seconds, result) of repeats timed runs after one warm-up run."""
    result = run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def local_run(path: str, model, chunk: int) -> np.ndarray:
    rows = np.load(path, mmap_mode="r")
    return np.concatenate([encode(np.array(rows[lo:lo + chunk]), model) for lo in range(0, len(rows), chunk)])


def dask_runs(path: str, model, chunk: int, workers: int, repeats: int):
    import dask.array as da
    from distributed import Client, LocalCluster

    rows = np.load(path, mmap_mode="r")
    shape = rows.shape
    del rows

    def load(block_id=None):
        lo = block_id[0] * chunk
        return np.array(np.load(path, mmap_mode="r")[lo:lo + chunk])

    blocks = tuple(min(chunk, shape[0] - lo) for lo in range(0, shape[0], chunk))
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        threads = set(client.run(fastlstm.get_num_threads).values())
        remote = client.scatter(model, broadcast=True)
        x = da.map_blocks(load, chunks=(blocks, (shape[1],), (shape[2],)), dtype=np.float32,
                          meta=np.empty((0, 0, 0), np.float32))
        encoded = x.map_blocks(encode, remote, drop_axis=1, chunks=(blocks, (model.out_size,)), dtype=np.float32,
                               meta=np.empty((0, 0), np.float32))
        seconds, result = best_of(lambda: client.compute(encoded).result(timeout=600), repeats)
    return seconds, result, threads


def ray_runs(path: str, model, chunk: int, workers: int, repeats: int):
    import ray
    from ray.util import ActorPool

    class Encoder:
        def __init__(self, model, path):
            self.model, self.rows = model, np.load(path, mmap_mode="r")

        def threads(self):
            return fastlstm.get_num_threads()

        def encode(self, lo):
            out, _ = self.model(np.array(self.rows[lo:lo + chunk]))
            return out.mean(axis=1)

    n = len(np.load(path, mmap_mode="r"))
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        remote = ray.put(model)
        actors = [ray.remote(num_cpus=1)(Encoder).remote(remote, path) for _ in range(workers)]
        threads = set(ray.get([a.threads.remote() for a in actors], timeout=300))
        pool = ActorPool(actors)
        seconds, result = best_of(
            lambda: np.concatenate(list(pool.map(lambda a, lo: a.encode.remote(lo), range(0, n, chunk)))), repeats)
    finally:
        ray.shutdown()
    return seconds, result, threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=32, help="sequences per task")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (the best counts)")
    parser.add_argument("--frameworks", default="dask,ray", help="comma-separated: dask, ray")
    parser.add_argument("--quick", action="store_true", help="a small job, to check that the program runs")
    args = parser.parse_args()
    if args.quick:
        args.sequences, args.steps, args.hidden_size, args.repeats = 128, 20, 64, 1
    frameworks = [f for f in args.frameworks.split(",") if f]
    unknown = set(frameworks) - {"dask", "ray"}
    if unknown:
        parser.error(f"--frameworks: expected dask and/or ray, got {sorted(unknown)}")

    model = fastlstm.LSTM(args.input_size, args.hidden_size, batch_first=True, seed=0)
    rows: Dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "sequences.npy")
        data = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                         shape=(args.sequences, args.steps, args.input_size))
        rng = np.random.default_rng(0)
        for lo in range(0, args.sequences, 256):
            data[lo:lo + 256] = rng.standard_normal(data[lo:lo + 256].shape, dtype=np.float32)
        data.flush()
        del data
        print(f"{args.sequences} sequences, T={args.steps}, I={args.input_size}, H={args.hidden_size}, chunks of "
              f"{args.chunk}, float32; best of {args.repeats} runs after a warm-up")
        print(f"{'run':<34} {'seconds':>8} {'seq/s':>8} {'vs 1 worker':>12} {'vs 1 process, 2 thr':>20}")
        want: List[np.ndarray] = []

        def report(label: str, seconds: float, result: np.ndarray, base: str = "") -> None:
            if want:
                assert np.array_equal(result, want[0]), f"{label}: results differ from one process"
            else:
                want.append(result)
            rows[label] = seconds
            ratio = f"{rows[base] / seconds:.2f}x" if base else ""
            vs_local = rows.get("one process, 2 threads", seconds) / seconds
            print(f"{label:<34} {seconds:>8.3f} {args.sequences / seconds:>8.0f} {ratio:>12} {vs_local:>19.2f}x",
                  flush=True)

        for threads in (2, 1):
            fastlstm.set_num_threads(threads)
            seconds, result = best_of(lambda: local_run(path, model, args.chunk), args.repeats)
            report(f"one process, {threads} thread{'s' if threads > 1 else ''}", seconds, result)
        runners = {"dask": (dask_runs, "Dask worker"), "ray": (ray_runs, "Ray actor")}
        for framework in frameworks:
            run, noun = runners[framework]
            first = ""
            for workers in (1, 2):
                seconds, result, threads = run(path, model, args.chunk, workers, args.repeats)
                assert threads == {1}, f"{framework}: fastlstm threads in the workers {threads}, expected 1"
                label = f"{workers} {noun}{'s' if workers > 1 else ''} x 1 thread"
                report(label, seconds, result, first)
                first = first or label


if __name__ == "__main__":
    main()
