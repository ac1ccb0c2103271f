"""Denormal numbers must not slow a forward down: prints time(denormal-driving data) / time(normal data).

    python benchmarks/denormals.py

The denormal case keeps the cell state in the subnormal range: the input gate is ~1e-35 and the candidate
~1e-4, so every step adds a subnormal i * g to c (forget gate 0.5), h follows, and the inputs and the
products with the scaled-down weights are subnormal too.
The kernels flush denormals to zero (FTZ/DAZ) for their own threads; without that, such inputs can make
an LSTM 20-200x slower. Target: ratio <= 1.2. Medians of interleaved rounds.
"""
import argparse

import numpy as np

import fastlstm
from fastlstm._bench import time_interleaved


def main():
    T, B, I, H = 200, 4, 128, 256
    rng = np.random.default_rng(0)
    normal = fastlstm.LSTM(I, H, seed=0)
    x_normal = rng.standard_normal((T, B, I)).astype(np.float32)
    h0 = np.zeros((1, B, H), np.float32)
    c_normal = rng.standard_normal((1, B, H)).astype(np.float32)

    denormal = fastlstm.LSTM(I, H, seed=0)
    state = denormal.state_dict()
    state["weight_ih_l0"] *= 1e-30
    state["weight_hh_l0"] *= 1e-30
    bias = np.zeros(4 * H, np.float32)
    bias[0:H] = -80.0  # input gate ~ 1.8e-35
    bias[2 * H : 3 * H] = 1e-4  # candidate g ~ 1e-4: i * g ~ 1e-39, a subnormal, every step
    state["bias_ih_l0"], state["bias_hh_l0"] = bias, np.zeros(4 * H, np.float32)
    denormal.load_state_dict(state)
    x_denormal = np.full((T, B, I), 1e-39, np.float32)  # subnormal inputs
    c_denormal = np.full((1, B, H), 1e-30, np.float32)

    t = time_interleaved(
        {"normal": lambda: normal(x_normal, (h0, c_normal)), "denormal": lambda: denormal(x_denormal, (h0, c_denormal))},
        seconds=1.0,
        min_rounds=40,
    )
    t_normal, t_denormal = t["normal"], t["denormal"]
    print(f"T={T}, B={B}, I={I}, H={H}: normal {t_normal * 1e3:.3f} ms, denormal-driving {t_denormal * 1e3:.3f} ms, "
          f"ratio {t_denormal / t_normal:.2f} (target <= 1.2)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    main()
