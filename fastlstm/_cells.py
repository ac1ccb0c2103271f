"""Recurrent cell kinds as data: what the Python classes and the packing need to know of a cell, in one place.

A cell kind names its kernel table (fastlstm._kernels.kernel_table's ``cell`` key), the gates of its fused
weight rows in torch's order, the state it carries from step to step, and which biases the packing folds
into the input projection. A new cell (GRU) is a new CellKind here plus its kernels and its reference update.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np


@dataclass(frozen=True)
class CellKind:
    name: str                  # the kernel-table key, e.g. "lstm"
    gates: Tuple[str, ...]     # gate rows of weight_ih / weight_hh / the biases, torch's order
    state: Tuple[str, ...]     # the state arrays carried between steps, in hx order

    @property
    def num_gates(self) -> int:
        return len(self.gates)

    def folded_bias(self, b_ih: np.ndarray, b_hh: np.ndarray) -> np.ndarray:
        """The bias added to the input projection: b_ih + b_hh for a cell whose gates sum both (LSTM)."""
        return b_ih + b_hh


# torch.nn.LSTM: gates i, f, g (the candidate), o; state (h, c)
LSTM_CELL = CellKind(name="lstm", gates=("i", "f", "g", "o"), state=("h", "c"))
