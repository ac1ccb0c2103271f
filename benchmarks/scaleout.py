"""Throughput of a batch job in one process against Dask workers and Ray actors (one thread each), on this node.

    python benchmarks/scaleout.py [--sequences 4096] [--steps 100] [--input-size 128] [--hidden-size 256]
                                  [--chunk 128] [--repeats 3] [--frameworks dask,ray] [--quick]

The job (the examples' job): N sequences of a memory-mapped .npy file, in chunks of --chunk sequences, each
chunk run through the LSTM and reduced on the worker to one vector per sequence (the mean of its outputs over
time). Timed, after a warm-up round (workers started, model shipped):

- one process, fastlstm on 2 threads and on 1 thread, calling chunk after chunk;
- a distributed.LocalCluster of 2 worker processes with one thread each (the nanny sets OMP_NUM_THREADS=1),
  dask.array.map_blocks with the model scattered to every worker, the job on one worker and on both;
- a local Ray with 2 actors of num_cpus=1 (Ray sets OMP_NUM_THREADS=1), the model shipped once per actor with
  ray.put, chunks handed out by ray.util.ActorPool to one actor and to both.

One framework runs at a time (its cluster started, timed, shut down), in rounds with the one-process runs (one of
each per round) so that the load of a shared machine hits them alike; each row shows its best round. Prints
sequences per second, the ratio of 2 workers to 1 worker (target >= 1.7x) and of each row to the one process on 2
threads. Every run's result is checked bitwise against the one process's for the same chunks. "busy" is the share
of the run's wall time the workers spent computing tasks (summed over the workers, divided by workers x wall time):
what is left is the framework's scheduling and transfers, or workers waiting for a core (on a loaded machine,
compare it with the one-process rows).
"""
import argparse
import contextlib
import os
import tempfile
import time
from typing import Callable, Dict, Iterator, Optional, Tuple

import numpy as np

import fastlstm


def encode(chunk, model):
    """(b, T, I) -> (b, H_out): each sequence's outputs averaged over time."""
    out, _ = model(chunk)
    return out.mean(axis=1)


# A run returns the job's result and the seconds its tasks computed (summed over the workers; None in-process).
Run = Callable[[], Tuple[np.ndarray, Optional[float]]]


def local_runs(path: str, model, chunk: int) -> Dict[str, Run]:
    """The job in this process, chunk after chunk, on 2 threads and on 1."""
    def run(threads: int) -> Tuple[np.ndarray, Optional[float]]:
        fastlstm.set_num_threads(threads)
        rows = np.load(path, mmap_mode="r")
        return np.concatenate([encode(np.array(rows[lo:lo + chunk]), model)
                               for lo in range(0, len(rows), chunk)]), None

    return {"one process, 2 threads": lambda: run(2), "one process, 1 thread": lambda: run(1)}


@contextlib.contextmanager
def dask_runs(path: str, model, chunk: int) -> Iterator[Dict[str, Run]]:
    """The job on a LocalCluster of 2 single-thread worker processes: on one of them, and on both."""
    import dask.array as da
    from distributed import Client, LocalCluster, get_task_stream

    rows = np.load(path, mmap_mode="r")
    shape = rows.shape
    del rows

    def load_encode(model, block_id=None):
        # one task per chunk reads its rows and reduces them where they are read (two map_blocks, a load and an
        # encode, let the scheduler run them on different workers and move the chunk between them)
        lo = block_id[0] * chunk
        return encode(np.array(np.load(path, mmap_mode="r")[lo:lo + chunk]), model)

    blocks = tuple(min(chunk, shape[0] - lo) for lo in range(0, shape[0], chunk))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        threads = set(client.run(fastlstm.get_num_threads).values())
        assert threads == {1}, f"Dask: fastlstm threads in the workers {threads}, expected 1"
        remote = client.scatter(model, broadcast=True)
        first = sorted(client.scheduler_info()["workers"])[:1]
        runs = iter(range(1 << 30))

        def run(workers):
            # a graph of its own per run: the same keys again would keep the previous run's worker restriction
            # while the scheduler still holds them (measured: "both" workers then ran as fast as one)
            encoded = da.map_blocks(load_encode, remote, chunks=(blocks, (model.out_size,)), dtype=np.float32,
                                    meta=np.empty((0, 0), np.float32), name=f"encode-{next(runs)}")
            with get_task_stream(client) as tasks:
                result = client.compute(encoded, workers=workers).result(timeout=600)
            busy = sum(span["stop"] - span["start"] for task in tasks.data for span in task["startstops"]
                       if span["action"] == "compute")
            return result, busy

        yield {"1 Dask worker x 1 thread": lambda: run(first), "2 Dask workers x 1 thread": lambda: run(None)}


@contextlib.contextmanager
def ray_runs(path: str, model, chunk: int) -> Iterator[Dict[str, Run]]:
    """The job on a local Ray with 2 actors of num_cpus=1: on one of them, and on both."""
    import ray
    from ray.util import ActorPool

    class Encoder:
        def __init__(self, model, path):
            self.model, self.rows = model, np.load(path, mmap_mode="r")

        def threads(self):
            return fastlstm.get_num_threads()

        def encode(self, lo):
            start = time.perf_counter()
            out, _ = self.model(np.array(self.rows[lo:lo + chunk]))
            return out.mean(axis=1), time.perf_counter() - start

    starts = range(0, len(np.load(path, mmap_mode="r")), chunk)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        remote = ray.put(model)
        actors = [ray.remote(num_cpus=1)(Encoder).remote(remote, path) for _ in range(2)]
        threads = set(ray.get([a.threads.remote() for a in actors], timeout=300))
        assert threads == {1}, f"Ray: fastlstm threads in the actors {threads}, expected 1"

        def run(pool):
            parts = list(pool.map(lambda actor, lo: actor.encode.remote(lo), starts))
            return np.concatenate([part for part, _ in parts]), sum(seconds for _, seconds in parts)

        yield {"1 Ray actor x 1 thread": lambda: run(ActorPool(actors[:1])),
               "2 Ray actors x 1 thread": lambda: run(ActorPool(actors))}
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=128, help="sequences per task")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (each row shows its best)")
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
              f"{args.chunk}, float32; best of {args.repeats} rounds after a warm-up round")
        local = local_runs(path, model, args.chunk)
        want, _ = local["one process, 2 threads"]()
        best: Dict[str, float] = {label: float("inf") for label in local}
        busy: Dict[str, str] = {}
        # one framework alive at a time (Ray's daemons running beside a Dask cluster took 5-10% off Dask's 2
        # workers), each group's rounds with the one-process runs in them
        for framework in frameworks or [None]:
            with contextlib.ExitStack() as stack:
                runs: Dict[str, Run] = dict(local)
                if framework:
                    runs.update(stack.enter_context({"dask": dask_runs, "ray": ray_runs}[framework](
                        path, model, args.chunk)))
                for round_ in range(args.repeats + 1):          # rounds through every run: load hits them alike
                    for label, run in runs.items():
                        start = time.perf_counter()
                        result, task_seconds = run()
                        seconds = time.perf_counter() - start
                        assert np.array_equal(result, want), f"{label}: results differ from one process"
                        if round_ and seconds < best.get(label, float("inf")):
                            best[label] = seconds
                            if task_seconds is not None:
                                busy[label] = f"{task_seconds / (int(label[0]) * seconds):.0%}"
    print(f"{'run':<28} {'seconds':>8} {'seq/s':>8} {'vs 1 worker':>12} {'vs 1 process, 2 thr':>20} {'busy':>6}")
    for label, seconds in best.items():
        one = label.replace("2 Dask workers", "1 Dask worker").replace("2 Ray actors", "1 Ray actor")
        ratio = f"{best[one] / seconds:.2f}x" if one != label else ""
        print(f"{label:<28} {seconds:>8.3f} {args.sequences / seconds:>8.0f} {ratio:>12} "
              f"{best['one process, 2 threads'] / seconds:>19.2f}x {busy.get(label, ''):>6}")


if __name__ == "__main__":
    main()
