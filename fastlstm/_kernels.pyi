# Type stub of the compiled module fastlstm._kernels (src/_kernels.pyx), written by hand from its def and cpdef
# functions and classes: keep it in step with them.
from typing import Any, Dict, Optional, Tuple

import numpy as np

CELL_KINDS: Dict[str, int]
CELL_GATES: Dict[str, int]
FORMATS: Dict[str, int]

def cpu_features() -> int: ...
def feature_names() -> Dict[int, str]: ...
def kernel_table(cell: str, weight_format: str, features: int) -> Optional[Tuple[str, int, int]]: ...
def contention() -> Tuple[float, float]: ...
def openmp_enabled() -> bool: ...
def compiler() -> str: ...
def set_row_split(mode: int) -> None: ...
def splits_rows(m: PackedModel, B: int, num_threads: int) -> bool: ...
def calls_in_flight() -> int: ...
def forward(
    m: PackedModel,
    x: np.ndarray,
    batch_first: bool,
    h0: np.ndarray,
    c0: np.ndarray,
    lengths: np.ndarray,
    out: np.ndarray,
    hn: np.ndarray,
    cn: np.ndarray,
    workspace: np.ndarray,
    num_threads: int,
) -> None: ...

class PackedModel:
    arrays: Tuple[Any, ...]
    def __init__(
        self,
        cell: str,
        weight_format: str,
        features: int,
        num_layers: int,
        num_directions: int,
        hidden_size: int,
        proj_size: int,
        narrow_last: bool,
        clip: float,
        input_forget: bool,
        reverse_only: bool,
        arrays: Tuple[Any, ...],
        linear_before_reset: bool = True,
    ) -> None: ...
    @property
    def kernel_name(self) -> str: ...
    @property
    def num_layers(self) -> int: ...
    @property
    def block(self) -> int: ...
    @property
    def tile_rows(self) -> int: ...
    def workspace_size(self, T: int, B: int) -> int: ...
    def team(self, B: int, num_threads: int) -> Tuple[int, bool, int]: ...

class ForwardPlan:
    packed: PackedModel
    B: int
    def __init__(
        self,
        packed: PackedModel,
        batch_first: bool,
        x_shape: Tuple[int, ...],
        out_shape: Tuple[int, ...],
        h_shape: Tuple[int, ...],
        c_shape: Tuple[int, ...],
        h0: np.ndarray,
        c0: np.ndarray,
        thread_args: Tuple[int, ...],
        max_pooled: int,
    ) -> None: ...
    def run(
        self, model: Any, x: Any, hx: Any, lengths: Any
    ) -> Optional[Tuple[np.ndarray, Tuple[np.ndarray, np.ndarray]]]: ...

class StreamCore:
    _model: Any
    _h: np.ndarray
    _c: np.ndarray
    _threads: int
    def __init__(self, model: Any, batch_size: int, threads: int) -> None: ...
    def step(self, x_t: Any, out: Optional[np.ndarray] = None) -> np.ndarray: ...
    def _run(self, x: np.ndarray, out: np.ndarray) -> None: ...
