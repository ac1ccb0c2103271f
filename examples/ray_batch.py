"""Dataset-scale batch inference with Ray Data: map_batches with a callable class, one model per actor.

    python examples/ray_batch.py                                   # a small run (Ray's start-up takes seconds)
    python examples/ray_batch.py --sequences 20000 --steps 200 --hidden-size 512 --actors 2

The dataset is the array of sequence ids; each actor memory-maps the .npy file once, gathers the rows of its
batches of ids, runs the LSTM on them and reduces every sequence to one vector (the mean of its outputs over
time), so only (N, 2H) numbers come back, never the (N, T, 2H) outputs. Each actor loads the model once, in its
constructor, with fastlstm.load (a file every node can read; ray.put(model) passed in fn_constructor_kwargs
works too).

Ray starts each actor with OMP_NUM_THREADS set to the CPUs it asked for (num_cpus=1 here), which fastlstm
follows: one thread per actor process. The script checks that results are bitwise the ones this process
computes for the same batches.
"""
import argparse
import os
import tempfile
import time

import numpy as np

import fastlstm


class Encoder:
    """Ray Data callable class: a batch of sequence ids -> each sequence's outputs averaged over time."""

    def __init__(self, model_path, data_path):
        self.model = fastlstm.load(model_path)            # once per actor
        self.data = np.load(data_path, mmap_mode="r")     # the actor reads only the rows it is given
        self.threads = fastlstm.get_num_threads()

    def __call__(self, batch):
        ids = batch["data"]
        out, _ = self.model(self.data[ids])                # batch_first: (b, T, D*H_out)
        return {"id": ids, "encoding": out.mean(axis=1), "threads": np.full(len(ids), self.threads)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=192)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32, help="sequences per batch")
    parser.add_argument("--actors", type=int, default=2, help="actor processes, one CPU each")
    args = parser.parse_args()

    import ray

    model = fastlstm.LSTM(args.input_size, args.hidden_size, num_layers=2, bidirectional=True, batch_first=True,
                          seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        model_path, data_path = os.path.join(tmp, "model.fastlstm"), os.path.join(tmp, "sequences.npy")
        model.save(model_path)
        data = np.lib.format.open_memmap(data_path, mode="w+", dtype=np.float32,
                                         shape=(args.sequences, args.steps, args.input_size))
        rng = np.random.default_rng(0)
        for lo in range(0, args.sequences, 1024):   # written in pieces: the file may exceed memory
            data[lo:lo + 1024] = rng.standard_normal(data[lo:lo + 1024].shape, dtype=np.float32)
        data.flush()
        del data

        ray.init(num_cpus=args.actors, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            # ids from the driver's memory, one block per batch: no read tasks that would wait for a CPU the actors
            # hold, and blocks enough for every actor
            ids = np.array_split(np.arange(args.sequences), -(-args.sequences // args.batch))
            encoded = ray.data.from_numpy(ids).map_batches(
                Encoder, fn_constructor_kwargs=dict(model_path=model_path, data_path=data_path),
                batch_size=args.batch, batch_format="numpy", num_cpus=1,
                compute=ray.data.ActorPoolStrategy(size=args.actors))
            start = time.perf_counter()
            batches = list(encoded.iter_batches(batch_size=None, batch_format="numpy"))
            seconds = time.perf_counter() - start
        finally:
            ray.shutdown()

        ids = np.concatenate([b["id"] for b in batches])
        result = np.concatenate([b["encoding"] for b in batches])[np.argsort(ids, kind="stable")]
        threads = sorted(set(np.concatenate([b["threads"] for b in batches]).tolist()))
        print(f"{args.sequences} sequences of {args.steps} steps on {args.actors} actors: {seconds:.2f} s, "
              f"{args.sequences / seconds:.0f} sequences/s (with the actors' start-up); result {result.shape}")
        print("fastlstm threads in the actors:", threads)
        assert threads == [1], threads

        # the same batches here: Ray Data cuts the id range into batches of args.batch within each block
        local = np.empty_like(result)
        rows = np.load(data_path, mmap_mode="r")
        for b in batches:
            out, _ = model(rows[b["id"]])
            local[b["id"]] = out.mean(axis=1)
        del rows
    assert np.array_equal(np.sort(ids), np.arange(args.sequences))
    assert result.dtype == local.dtype and np.array_equal(result, local)
    print("bitwise equal to this process for the same batches")


if __name__ == "__main__":
    main()
