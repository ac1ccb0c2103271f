"""Configuration, parameters and input validation shared by fastlstm.LSTM and fastlstm.reference.LSTM.

Nothing here computes an LSTM: the oracle (reference.py) and the fast path (_lstm.py) share how parameters
are named, initialised, loaded and checked, and how a call's arguments are validated and normalised, so
that the two can only differ in the arithmetic.
"""
from __future__ import annotations

import numbers
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ._cells import LSTM_CELL, CellKind

_SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# largest extent a BLAS or kernel int may hold
_INT_MAX = 2**31 - 1


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    value = int(value)
    if value < minimum:
        if minimum == 1:
            raise ValueError(f"{name} must be greater than zero, got {value}")
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if value > _INT_MAX:
        raise ValueError(f"{name} must be at most {_INT_MAX}, got {value}")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")
    return bool(value)


def _model_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dt not in _SUPPORTED_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _describe(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__} of {len(value)}"
    if isinstance(value, np.ndarray):
        return f"ndarray of shape {value.shape}"
    return type(value).__name__


def _check_hx_pair(hx: Any) -> Tuple[Any, Any]:
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"hx must be a tuple (h_0, c_0), got {_describe(hx)}")
    return hx[0], hx[1]


def _as_numeric_array(name: str, value: Any) -> np.ndarray:
    """np.asarray with fastlstm's input rules: integers and floats only."""
    try:
        arr = np.asarray(value)
    except ValueError as exc:  # ragged nested sequences
        raise ValueError(f"{name} must be a rectangular array of numbers: {exc}") from exc
    if arr.dtype.kind not in "iuf":
        raise TypeError(
            f"{name} must hold integers or floats, got dtype {arr.dtype}"
            + (" (bool is not accepted)" if arr.dtype.kind == "b" else "")
        )
    return arr


class LSTMBase:
    """Configuration and parameters of a (possibly stacked, bidirectional, projected) LSTM.

    Subclasses implement ``_forward_validated`` and may react to parameter changes in
    ``_parameters_changed``.
    """

    _cell: CellKind = LSTM_CELL

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bias: bool = True,
        batch_first: bool = False,
        bidirectional: bool = False,
        proj_size: int = 0,
        dtype: Any = np.float32,
        seed: Optional[int] = None,
        peepholes: bool = False,
        clip: Optional[float] = None,
        input_forget: bool = False,
        direction: Optional[str] = None,
    ) -> None:
        self.input_size = _check_int("input_size", input_size, 1)
        self.hidden_size = _check_int("hidden_size", hidden_size, 1)
        self.num_layers = _check_int("num_layers", num_layers, 1)
        self.bias = _check_bool("bias", bias)
        self.batch_first = _check_bool("batch_first", batch_first)
        bidirectional = _check_bool("bidirectional", bidirectional)
        if isinstance(proj_size, (bool, np.bool_)) or not isinstance(proj_size, numbers.Integral) or proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        self.proj_size = int(proj_size)
        if self.proj_size >= self.hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if direction is None:
            direction = "bidirectional" if bidirectional else "forward"
        elif direction not in ("forward", "reverse", "bidirectional"):
            raise ValueError(f"direction must be 'forward', 'reverse' or 'bidirectional', got {direction!r}")
        elif bidirectional and direction != "bidirectional":
            raise ValueError(f"bidirectional=True contradicts direction={direction!r}")
        self.direction = direction
        self.bidirectional = direction == "bidirectional"
        self.dtype = _model_dtype(dtype)
        self.peepholes = _check_bool("peepholes", peepholes)
        self.input_forget = _check_bool("input_forget", input_forget)
        if clip is not None:
            if isinstance(clip, (bool, np.bool_)) or not isinstance(clip, numbers.Real):
                raise TypeError(f"clip should be a number or None, got: {type(clip).__name__}")
            if not (np.isfinite(clip) and clip > 0):
                raise ValueError(f"clip must be a positive finite number or None, got {clip}")
            clip = float(clip)
        self.clip = clip
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"seed should be an int or None, got: {type(seed).__name__}")
        object.__setattr__(self, "_params", {})
        self._init_parameters(seed)

    # ---- derived sizes ------------------------------------------------------------------------

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def out_size(self) -> int:
        """H_out: the size of h (proj_size when projecting, else hidden_size)."""
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    def _layer_input_size(self, layer: int) -> int:
        return self.input_size if layer == 0 else self.num_directions * self.out_size

    def _suffixes(self) -> List[str]:
        return ["", "_reverse"] if self.bidirectional else [""]

    def _param_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Names and shapes of every parameter, in torch's order."""
        H, P = self.hidden_size, self.proj_size
        GH = self._cell.num_gates * H
        shapes: Dict[str, Tuple[int, ...]] = {}
        for layer in range(self.num_layers):
            for sfx in self._suffixes():
                shapes[f"weight_ih_l{layer}{sfx}"] = (GH, self._layer_input_size(layer))
                shapes[f"weight_hh_l{layer}{sfx}"] = (GH, self.out_size)
                if self.bias:
                    shapes[f"bias_ih_l{layer}{sfx}"] = (GH,)
                    shapes[f"bias_hh_l{layer}{sfx}"] = (GH,)
                if P > 0:
                    shapes[f"weight_hr_l{layer}{sfx}"] = (P, H)
                if self.peepholes:
                    shapes[f"weight_ph_l{layer}{sfx}"] = (3, H)
        return shapes

    # ---- parameters ---------------------------------------------------------------------------

    def _init_parameters(self, seed: Optional[int]) -> None:
        """uniform(-1/sqrt(H), 1/sqrt(H)) for every parameter, like torch, drawn from ``seed``; or, for a model
        being unpickled, its saved parameters (see _unpickle)."""
        saved = self.__dict__.pop("_unpickled_params", None)
        if saved is not None:
            self._adopt_parameters(saved)
            return
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.hidden_size)
        values = {
            name: rng.uniform(-bound, bound, size=shape).astype(self.dtype)
            for name, shape in self._param_shapes().items()
        }
        self._set_parameters(values)

    def _adopt_parameters(self, saved: Mapping[str, Any]) -> None:
        """Take unpickled parameters as they are (no copy when each is a C-contiguous array of the model's
        dtype) and pack them once. Names or shapes that do not fit the configuration: ValueError."""
        if not isinstance(saved, Mapping):
            raise TypeError(f"pickled parameters must be a mapping of names to arrays, got {type(saved).__name__}")
        shapes = self._param_shapes()
        if set(saved) != set(shapes):
            raise ValueError(f"pickled parameters: expected the names {sorted(shapes)}, got {sorted(saved)}")
        values = {}
        for name, shape in shapes.items():
            arr = np.ascontiguousarray(_as_numeric_array(name, saved[name]), dtype=self.dtype)
            if arr.shape != shape:
                raise ValueError(f"pickled parameter {name}: expected shape {shape}, got {arr.shape}")
            values[name] = arr
        self._set_parameters(values)

    def _set_parameters(self, values: Dict[str, np.ndarray]) -> None:
        for arr in values.values():
            arr.flags.writeable = False
        params = dict(self._params)
        params.update(values)
        object.__setattr__(self, "_params", params)
        self._parameters_changed()

    def _parameters_changed(self) -> None:
        """Hook for subclasses (fastlstm.LSTM repacks its weights here)."""

    def __getattr__(self, name: str) -> Any:
        params = self.__dict__.get("_params")
        if params is not None and name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("_params")
        if params is not None and name in params:
            self._set_parameters({name: self._convert_param(name, value, params[name].shape)})
        else:
            object.__setattr__(self, name, value)

    def _convert_param(self, name: str, value: Any, shape: Tuple[int, ...]) -> np.ndarray:
        arr = _as_numeric_array(name, value)
        if arr.shape != tuple(shape):
            raise ValueError(f"{name}: expected shape {tuple(shape)}, got {arr.shape}")
        return np.array(arr, dtype=self.dtype, order="C", copy=True)

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Copies of every parameter, keyed by torch's names, in torch's order."""
        return {name: self._params[name].copy() for name in self._param_shapes()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Copy every parameter from ``state_dict`` (NumPy arrays or anything np.asarray accepts).

        Missing or unexpected keys and wrong shapes raise ValueError listing them; nothing changes then.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping of names to arrays, got {type(state_dict).__name__}")
        shapes = self._param_shapes()
        missing = [k for k in shapes if k not in state_dict]
        unexpected = [k for k in state_dict if k not in shapes]
        problems = []
        if missing:
            problems.append(f"Missing key(s) in state_dict: {', '.join(repr(k) for k in missing)}.")
        if unexpected:
            problems.append(f"Unexpected key(s) in state_dict: {', '.join(repr(k) for k in unexpected)}.")
        converted = {}
        for name, shape in shapes.items():
            if name not in state_dict:
                continue
            arr = _as_numeric_array(name, state_dict[name])
            if arr.shape != shape:
                problems.append(
                    f"size mismatch for {name}: copying a param with shape {arr.shape}, "
                    f"the shape in current model is {shape}."
                )
                continue
            converted[name] = np.array(arr, dtype=self.dtype, order="C", copy=True)
        if problems:
            raise ValueError("Error(s) in loading state_dict:\n\t" + "\n\t".join(problems))
        self._set_parameters(converted)

    def _config(self) -> Dict[str, Any]:
        return dict(
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            bias=self.bias,
            batch_first=self.batch_first,
            proj_size=self.proj_size,
            dtype=self.dtype.name,
            peepholes=self.peepholes,
            clip=self.clip,
            input_forget=self.input_forget,
            direction=self.direction,
        )

    def __reduce__(self) -> Tuple[Any, ...]:
        """Pickle to the configuration and the parameters (about the size of the weights). Unpickling adopts the
        saved arrays and packs them once: no random initialisation, no copy, no second packing."""
        return (_unpickle, (type(self), self._config(), dict(self._params)))

    def __repr__(self) -> str:
        extra = [f"{self.input_size}", f"{self.hidden_size}"]
        if self.num_layers != 1:
            extra.append(f"num_layers={self.num_layers}")
        if not self.bias:
            extra.append("bias=False")
        if self.batch_first:
            extra.append("batch_first=True")
        if self.direction == "bidirectional":
            extra.append("bidirectional=True")
        elif self.direction == "reverse":
            extra.append("direction='reverse'")
        if self.proj_size:
            extra.append(f"proj_size={self.proj_size}")
        if self.dtype != np.float32:
            extra.append(f"dtype={self.dtype.name}")
        if self.peepholes:
            extra.append("peepholes=True")
        if self.clip is not None:
            extra.append(f"clip={self.clip}")
        if self.input_forget:
            extra.append("input_forget=True")
        return f"{type(self).__name__}({', '.join(extra)})"

    # ---- loaders ------------------------------------------------------------------------------

    @classmethod
    def from_torch(cls, module: Any) -> "LSTMBase":
        """Build from a ``torch.nn.LSTM``: same configuration, batch_first, dtype and weights.

        torch is imported only here. float16/bfloat16 modules: ValueError (convert them first).
        """
        import torch  # noqa: F401  (only to fail clearly when absent)

        if not isinstance(module, torch.nn.LSTM):
            raise TypeError(f"from_torch expects a torch.nn.LSTM, got {type(module).__name__}")
        weight = module.weight_ih_l0
        dtype = {torch.float32: np.float32, torch.float64: np.float64}.get(weight.dtype)
        if dtype is None:
            raise ValueError(f"from_torch: dtype must be torch.float32 or torch.float64, got {weight.dtype}")
        model = cls(
            module.input_size,
            module.hidden_size,
            module.num_layers,
            bias=module.bias,
            batch_first=module.batch_first,
            bidirectional=module.bidirectional,
            proj_size=module.proj_size,
            dtype=dtype,
        )
        with torch.no_grad():
            state = {name: t.detach().cpu().numpy() for name, t in module.state_dict().items()}
        model.load_state_dict(state)
        return model

    @classmethod
    def from_keras(cls, layer_or_weights: Any) -> "LSTMBase":
        """Build from a Keras 3 ``LSTM`` layer or its ``get_weights()`` list; returns batch_first=True.

        kernel (I, 4H), recurrent_kernel (H, 4H), bias (4H,), gate order i, f, c, o. Activations other
        than tanh / sigmoid raise ValueError naming them. keras is not imported.
        """
        from . import _interop

        return _interop.from_keras(cls, layer_or_weights)

    @classmethod
    def from_onnx(cls, model: Any, node: Any = None) -> "LSTMBase":
        """Build from an LSTM node of an ONNX model (``onnx.ModelProto`` or a path).

        ``node``: None (the only LSTM node of the main graph), a node name, an index among the LSTM nodes, or
        a NodeProto. W, R, B, P must be initializers, Constant outputs or Identity of those. Supported:
        direction (lstm.direction), layout (1 gives batch_first=True), hidden_size, peepholes P, clip,
        input_forget. sequence_lens, initial_h and initial_c are runtime data: pass lengths= and hx=
        (note ONNX's Y is (T, D, B, H); ours is (T, B, D*H)).
        """
        from . import _interop

        return _interop.from_onnx(cls, model, node)

    def save(self, path: Any) -> None:
        """Write config and weights to exactly ``path``; ``fastlstm.load(path)`` reads it back bitwise.

        The file is a NumPy .npz archive with a JSON header; it loads without pickle.
        """
        from . import _interop

        _interop.save(self, path)

    # ---- calling ------------------------------------------------------------------------------

    def __call__(self, x: Any, hx: Optional[Tuple[Any, Any]] = None, *, lengths: Any = None):
        """Run the LSTM over a sequence.

        Parameters
        ----------
        x : array-like (T, B, I), (B, T, I) when batch_first, or unbatched (T, I)
        hx : optional (h_0, c_0) of shapes (D*num_layers, B, H_out) and (D*num_layers, B, H),
            without the B axis for unbatched input
        lengths : optional integers (B,), 1 <= lengths[b] <= T; rows past a length are zero in the
            output and the state is the one at the last valid step

        Returns
        -------
        output : ndarray (T, B, D*H_out) (batch-first or unbatched like x)
        (h_n, c_n) : ndarrays shaped like h_0 and c_0
        """
        call = self._validate_call(x, hx, lengths)
        return self._forward_validated(call)

    forward = __call__

    def _forward_validated(self, call: "ValidatedCall"):
        raise NotImplementedError

    def _validate_call(self, x: Any, hx: Any, lengths: Any) -> "ValidatedCall":
        """Check and normalise the arguments of a call; every error of a forward pass is raised here."""
        if hx is None and lengths is None and type(x) is np.ndarray and x.ndim == 3 and x.dtype.kind == "f":
            # the common call, checked in fewer steps than below (same outcome)
            T, B = (x.shape[1], x.shape[0]) if self.batch_first else (x.shape[0], x.shape[1])
            if (x.shape[2] == self.input_size and T <= _INT_MAX and B <= _INT_MAX
                    and T * B * max(self.input_size, 4 * self.hidden_size) <= 2**62):
                return ValidatedCall(x, None, None, None, True, T, B)
        x = _as_numeric_array("input", x)
        if x.ndim not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {x.ndim}D instead")
        batched = x.ndim == 3
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {x.shape[-1]}"
            )
        if batched:
            T, B = (x.shape[1], x.shape[0]) if self.batch_first else (x.shape[0], x.shape[1])
        else:
            T, B = x.shape[0], 1
        if T > _INT_MAX or B > _INT_MAX or T * B * max(self.input_size, 4 * self.hidden_size) > 2**62:
            raise ValueError(f"input is too large: T={T}, B={B}")
        LD = self.num_layers * self.num_directions
        h_shape = (LD, B, self.out_size) if batched else (LD, self.out_size)
        c_shape = (LD, B, self.hidden_size) if batched else (LD, self.hidden_size)
        if hx is None:
            h0 = c0 = None
        else:
            h0, c0 = _check_hx_pair(hx)
            h0 = _as_numeric_array("hx[0]", h0)
            c0 = _as_numeric_array("hx[1]", c0)
            if (h0.ndim, c0.ndim) != (x.ndim, x.ndim):
                kind = "batched 3-D" if batched else "unbatched 2-D"
                raise ValueError(
                    f"For {kind} input, hx and cx should also be {x.ndim}-D but got ({h0.ndim}-D, {c0.ndim}-D) "
                    f"tensors: expected hx[0] of shape {h_shape} and hx[1] of shape {c_shape} for input of shape "
                    f"{x.shape}, got {h0.shape} and {c0.shape}"
                )
            if h0.shape != h_shape:
                raise ValueError(f"Expected hidden[0] size {h_shape}, got {tuple(h0.shape)}")
            if c0.shape != c_shape:
                raise ValueError(f"Expected hidden[1] size {c_shape}, got {tuple(c0.shape)}")
        lens = None
        if lengths is not None:
            if T == 0:
                raise ValueError("lengths: no length is valid for an input with T = 0 time steps")
            try:
                arr = np.asarray(lengths)
            except ValueError as exc:
                raise ValueError(f"lengths must be a 1-D sequence of integers: {exc}") from exc
            if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):
                raise TypeError(f"lengths must be integers, got dtype {arr.dtype}")
            expected = (B,) if batched else (1,)
            if arr.ndim == 0 and not batched:
                arr = arr.reshape(1)
            if arr.shape != expected:
                raise ValueError(f"lengths: expected shape {expected}, got {arr.shape}")
            if arr.size and (arr.min() < 1 or arr.max() > T):
                raise ValueError(
                    f"lengths: expected 1 <= lengths[b] <= T = {T}, got values from {arr.min()} to {arr.max()}"
                )
            lens = arr.astype(np.int32)
        return ValidatedCall(x, h0, c0, lens, batched, T, B)


def _unpickle(cls: type, config: Dict[str, Any], params: Mapping[str, Any]) -> LSTMBase:
    """A ``cls`` of ``config`` (checked as the constructor checks it) holding the pickled ``params``."""
    model = cls.__new__(cls)
    object.__setattr__(model, "_unpickled_params", params)
    model.__init__(**config)
    return model


class ValidatedCall:
    """The arguments of one forward call after validation (shapes checked, not yet converted)."""

    __slots__ = ("x", "h0", "c0", "lengths", "batched", "T", "B")

    def __init__(self, x, h0, c0, lengths, batched, T, B):
        self.x, self.h0, self.c0, self.lengths = x, h0, c0, lengths
        self.batched, self.T, self.B = batched, T, B
