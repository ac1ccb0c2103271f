"""Dataset-scale batch inference with Dask: dask.array.map_blocks over a .npy file on a distributed.LocalCluster.

    python examples/dask_batch.py                                  # a small run of seconds
    python examples/dask_batch.py --sequences 20000 --steps 200 --hidden-size 512 --workers 2

Each worker process reads its own chunks of sequences from the file through a memory map (nothing but a path
travels with the tasks), runs the LSTM on them and reduces every sequence on the worker to one vector (the mean
of its outputs over time), so only (N, 2H) numbers come back, never the (N, T, 2H) outputs. The model travels
once per worker: client.scatter(model, broadcast=True). Putting it in a closure or a plain map_blocks argument
instead embeds the pickled weights in every task and unpickles them again for each chunk.

Dask's nanny starts each worker with OMP_NUM_THREADS=1, which fastlstm follows: one thread per worker process
(fastlstm.get_num_threads() is 1 in the workers). The script checks that the cluster's results are bitwise the
ones this process computes for the same chunks.
"""
import argparse
import os
import tempfile
import time

import numpy as np

import fastlstm


class NpyRows:
    """The array in a .npy file, read through a memory map; pickles as its path, so each worker maps the file
    itself (a np.memmap would pickle its whole contents into the task graph)."""

    def __init__(self, path):
        self.path = path
        data = np.load(path, mmap_mode="r")
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __getitem__(self, index):
        return np.array(np.load(self.path, mmap_mode="r")[index])

    def __reduce__(self):
        return (NpyRows, (self.path,))


def encode(chunk, model):
    """(b, T, I) sequences -> (b, D*H_out): each sequence's outputs averaged over time, computed where the chunk is."""
    out, _ = model(chunk)                # batch_first: out is (b, T, D*H_out)
    return out.mean(axis=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=192)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=32, help="sequences per task")
    parser.add_argument("--workers", type=int, default=2, help="worker processes, one thread each")
    args = parser.parse_args()

    import dask.array as da
    from distributed import Client, LocalCluster

    model = fastlstm.LSTM(args.input_size, args.hidden_size, num_layers=2, bidirectional=True, batch_first=True,
                          seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "sequences.npy")
        data = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                         shape=(args.sequences, args.steps, args.input_size))
        rng = np.random.default_rng(0)
        for lo in range(0, args.sequences, 1024):   # written in pieces: the file may exceed memory
            data[lo:lo + 1024] = rng.standard_normal(data[lo:lo + 1024].shape, dtype=np.float32)
        data.flush()
        del data

        x = da.from_array(NpyRows(path), chunks=(args.chunk, -1, -1), asarray=False)
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            threads = client.run(fastlstm.get_num_threads)
            print("fastlstm threads in each worker:", sorted(threads.values()))
            assert set(threads.values()) == {1}, threads
            remote_model = client.scatter(model, broadcast=True)     # one copy per worker
            encoded = x.map_blocks(encode, remote_model, drop_axis=1,
                                   chunks=(x.chunks[0], (model.num_directions * model.out_size,)),
                                   dtype=np.float32, meta=np.empty((0, 0), np.float32))
            start = time.perf_counter()
            result = encoded.compute()
            seconds = time.perf_counter() - start
        print(f"{args.sequences} sequences of {args.steps} steps on {args.workers} workers: {seconds:.2f} s, "
              f"{args.sequences / seconds:.0f} sequences/s; result {result.shape}")

        rows = NpyRows(path)
        local = np.concatenate([encode(rows[lo:lo + args.chunk], model)
                                for lo in range(0, args.sequences, args.chunk)])
    assert result.dtype == local.dtype and np.array_equal(result, local)
    print("bitwise equal to this process for the same chunks")


if __name__ == "__main__":
    main()
