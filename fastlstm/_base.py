"""Configuration, parameters and input validation shared by fastlstm.LSTM and fastlstm.reference.LSTM.

Nothing here computes an LSTM: the oracle (reference.py) and the fast path (_lstm.py) share how parameters
are named, initialised, loaded and checked, and how a call's arguments are validated and normalised, so
that the two can only differ in the arithmetic.
"""
from __future__ import annotations

import numbers
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, TypeVar

import numpy as np
from numpy.typing import DTypeLike

# what a forward call returns: output, (h_n, c_n)
ForwardResult = Tuple[np.ndarray, Tuple[np.ndarray, np.ndarray]]
_Model = TypeVar("_Model", bound="LSTMBase")

from . import _quant
from ._cells import LSTM_CELL, CellKind

_SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# largest extent a BLAS or kernel int may hold
_INT_MAX = 2**31 - 1


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    n = int(value)
    if n < minimum:
        if minimum == 1:
            raise ValueError(f"{name} must be greater than zero, got {n}")
        raise ValueError(f"{name} must be >= {minimum}, got {n}")
    if n > _INT_MAX:
        raise ValueError(f"{name} must be at most {_INT_MAX}, got {n}")
    return n


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")
    return bool(value)


def _model_dtype(dtype: Any) -> np.dtype[Any]:
    try:
        dt: np.dtype[Any] = np.dtype(dtype)
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
        hint = ""
        if name == "input":
            hint = " To run sequences of different lengths in one call, pad them to the longest and pass lengths=."
        raise ValueError(f"{name} must be a rectangular array of numbers ({exc}).{hint}") from exc
    if arr.dtype.kind not in "iuf":
        raise TypeError(
            f"{name} must hold integers or floats, got dtype {arr.dtype}"
            + (" (bool is not accepted)" if arr.dtype.kind == "b" else "")
        )
    return arr


# Attributes fixed at construction: the parameters' shapes and the packed weights follow from them.
CONFIG_ATTRIBUTES = frozenset({
    "input_size", "hidden_size", "num_layers", "bias", "batch_first", "bidirectional", "proj_size", "dtype",
    "peepholes", "clip", "input_forget", "direction", "num_directions", "out_size", "weights",
})


class LSTMBase:
    """Configuration and parameters of a (possibly stacked, bidirectional, projected) LSTM.

    Subclasses implement ``_forward_validated`` and may react to parameter changes in
    ``_parameters_changed``. The configuration is read-only (see CONFIG_ATTRIBUTES); the parameters are
    read-only arrays that may be replaced as a whole (attribute assignment, load_state_dict).
    """

    _cell: CellKind = LSTM_CELL

    # set once by __init__ (through object.__setattr__: __setattr__ refuses them)
    _input_size: int
    _hidden_size: int
    _num_layers: int
    _bias: bool
    _batch_first: bool
    _proj_size: int
    _direction: str
    _dtype: np.dtype[Any]
    _peepholes: bool
    _clip: Optional[float]
    _input_forget: bool
    _params: Dict[str, np.ndarray]  # by torch's names, read-only arrays; replaced as a whole by _set_parameters
    _format: Optional[str]  # "bf16" / "int8" for a quantized model (fastlstm._quant), else None
    _qparams: Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]]  # its weight matrices as stored: (q, scale)

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
        dtype: DTypeLike = np.float32,
        seed: Optional[int] = None,
        peepholes: bool = False,
        clip: Optional[float] = None,
        input_forget: bool = False,
        direction: Optional[str] = None,
        weights: Optional[str] = None,
    ) -> None:
        hidden_size = _check_int("hidden_size", hidden_size, 1)
        if isinstance(proj_size, (bool, np.bool_)) or not isinstance(proj_size, numbers.Integral):
            raise TypeError(f"proj_size should be of type int, got: {type(proj_size).__name__}")
        if proj_size < 0:
            raise ValueError(f"proj_size should be a positive integer or zero to disable projections, got {proj_size}")
        if proj_size >= hidden_size:
            raise ValueError(f"proj_size has to be smaller than hidden_size, got proj_size={proj_size} and "
                             f"hidden_size={hidden_size}")
        bidirectional = _check_bool("bidirectional", bidirectional)
        if direction is None:
            direction = "bidirectional" if bidirectional else "forward"
        elif direction not in ("forward", "reverse", "bidirectional"):
            raise ValueError(f"direction must be 'forward', 'reverse' or 'bidirectional', got {direction!r}")
        elif bidirectional and direction != "bidirectional":
            raise ValueError(f"bidirectional=True contradicts direction={direction!r}")
        if clip is not None:
            if isinstance(clip, (bool, np.bool_)) or not isinstance(clip, numbers.Real):
                raise TypeError(f"clip should be a number or None, got: {type(clip).__name__}")
            if not (np.isfinite(clip) and clip > 0):
                raise ValueError(f"clip must be a positive finite number or None, got {clip}")
            clip = float(clip)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"seed should be an int or None, got: {type(seed).__name__}")
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be a non-negative integer or None, got {seed}")
        config: Dict[str, Any] = dict(
            _input_size=_check_int("input_size", input_size, 1),
            _hidden_size=hidden_size,
            _num_layers=_check_int("num_layers", num_layers, 1),
            _bias=_check_bool("bias", bias),
            _batch_first=_check_bool("batch_first", batch_first),
            _proj_size=int(proj_size),
            _direction=direction,
            _dtype=_model_dtype(dtype),
            _peepholes=_check_bool("peepholes", peepholes),
            _clip=clip,
            _input_forget=_check_bool("input_forget", input_forget),
            _params={},
        )
        for name, value in config.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_qparams", {})
        object.__setattr__(self, "_format", self._check_weights(weights))
        self._init_parameters(seed)

    # ---- configuration (read-only) ------------------------------------------------------------

    @property
    def input_size(self) -> int:
        """I: the size of x_t."""
        return self._input_size

    @property
    def hidden_size(self) -> int:
        """H: the number of units (the size of c)."""
        return self._hidden_size

    @property
    def num_layers(self) -> int:
        """Stacked layers, each feeding its output sequence to the next."""
        return self._num_layers

    @property
    def bias(self) -> bool:
        """Whether the layers have the biases ``bias_ih_l{k}`` and ``bias_hh_l{k}``."""
        return self._bias

    @property
    def batch_first(self) -> bool:
        """Whether batched input and output are (B, T, ...) rather than (T, B, ...)."""
        return self._batch_first

    @property
    def bidirectional(self) -> bool:
        """Whether each layer also runs from the end of the sequence (``direction == "bidirectional"``)."""
        return self._direction == "bidirectional"

    @property
    def direction(self) -> str:
        """"forward", "reverse" (one pass from the end, from ONNX) or "bidirectional"."""
        return self._direction

    @property
    def proj_size(self) -> int:
        """P: the size h is projected to by ``weight_hr_l{k}`` (0: no projection)."""
        return self._proj_size

    @property
    def dtype(self) -> np.dtype[Any]:
        """float32 or float64: the parameters', the computation's and the results' dtype."""
        return self._dtype

    @property
    def peepholes(self) -> bool:
        """Whether the gates i, f and o also look at the cell state (ONNX's P, ``weight_ph_l{k}``)."""
        return self._peepholes

    @property
    def clip(self) -> Optional[float]:
        """Every gate pre-activation is clipped to [-clip, clip] (None: no clipping)."""
        return self._clip

    @property
    def input_forget(self) -> bool:
        """Whether the forget gate is coupled to the input gate: f = 1 - i."""
        return self._input_forget

    def _check_weights(self, weights: Optional[str]) -> Optional[str]:
        """The reduced-precision format of a model built with ``weights`` (None for the dtype's own)."""
        if weights is None or weights == self.dtype.name:
            return None
        _quant.check_format(weights)
        if self.dtype != np.float32:
            raise ValueError(f"weights={weights!r} needs a float32 model, got dtype {self.dtype}")
        if weights == "int8":
            longest = max(self.input_size, self.hidden_size, 2 * self.hidden_size)
            if longest > _quant.INT8_MAX_LENGTH:
                raise ValueError(
                    f"int8 weights: input_size and the layers' input and hidden sizes must be at most "
                    f"{_quant.INT8_MAX_LENGTH} (int32 dot products), got {longest}"
                )
        return weights

    @property
    def weights(self) -> str:
        """The format of the weights: "float32", "float64", or "bf16" / "int8" after ``quantize``."""
        return self._format or self.dtype.name

    def quantize(self: _Model, weights: str) -> _Model:
        """A new model of the same class and configuration whose weight matrices (W_ih, W_hh, W_hr) are stored in
        ``weights`` ("bf16" or "int8"; see fastlstm._quant for the rounding); biases and peepholes stay float32,
        and so do inputs, outputs and states. Only float32 models (float64: ValueError). This model is unchanged.
        """
        _quant.check_format(weights)
        if self.dtype != np.float32:
            raise ValueError(f"quantize: only float32 models can be quantized, this one is {self.dtype}")
        config = self._config()
        config["weights"] = weights
        model = type(self)(**config)
        model.load_state_dict(self.state_dict())
        return model

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
        """Install parameter values (new arrays of the dtype); a quantized model stores its weight matrices in its
        format, and the values it computes with (dequantized) as the parameters."""
        stored = {}
        if self._format is not None:
            for name, value in values.items():
                if _is_matrix(name):
                    stored[name] = _quant.quantize_matrix(value, self._format)
        self._install(values, stored)

    def _install(self, values: Dict[str, np.ndarray],
                 stored: Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]]) -> None:
        """Set parameters from values, the matrices in ``stored`` (q, scale) from those (dequantized)."""
        values = dict(values)
        for name, (q, scale) in stored.items():
            values[name] = _quant.dequantize(q, scale, self.dtype)
            for arr in (q, scale):
                if arr is not None:
                    arr.flags.writeable = False
        for arr in values.values():
            arr.flags.writeable = False
        params = dict(self._params)
        params.update(values)
        qparams = dict(self._qparams)
        qparams.update(stored)
        object.__setattr__(self, "_params", params)
        object.__setattr__(self, "_qparams", qparams)
        self._parameters_changed()

    def _stored_arrays(self) -> Dict[str, np.ndarray]:
        """What save and pickle keep: the state_dict, and for a quantized model its weight matrices as stored
        (bf16 bits as uint16; int8 as int8 with the float32 scales under "<name>.scale")."""
        if self._format is None:
            return self.state_dict()
        arrays = {}
        for name in self._param_shapes():
            if name in self._qparams:
                q, scale = self._qparams[name]
                arrays[name] = q.copy()
                if scale is not None:
                    arrays[name + ".scale"] = scale.copy()
            else:
                arrays[name] = self._params[name].copy()
        return arrays

    def _load_stored_arrays(self, arrays: Mapping[str, Any]) -> None:
        """Set every parameter from arrays as _stored_arrays gives them, bitwise; ValueError listing any missing,
        unexpected or malformed entry."""
        if self._format is None:
            self.load_state_dict(arrays)
            return
        expected: Dict[str, Tuple[Tuple[int, ...], np.dtype]] = {}
        for name, shape in self._param_shapes().items():
            if _is_matrix(name):
                expected[name] = (shape, np.dtype(np.uint16 if self._format == "bf16" else np.int8))
                if self._format == "int8":
                    expected[name + ".scale"] = ((shape[0],), np.dtype(np.float32))
            else:
                expected[name] = (shape, self.dtype)
        problems = [f"missing {k!r}" for k in expected if k not in arrays]
        problems += [f"unexpected {k!r}" for k in arrays if k not in expected]
        for name, (shape, dtype) in expected.items():
            arr = arrays.get(name)
            if arr is not None and (np.asarray(arr).shape != shape or np.asarray(arr).dtype != dtype):
                arr = np.asarray(arr)
                problems.append(f"{name}: expected {dtype} of shape {shape}, got {arr.dtype} of shape {arr.shape}")
        if problems:
            raise ValueError(f"{self._format} weights: " + "; ".join(problems))
        values, stored = {}, {}
        for name in self._param_shapes():
            arr = np.array(arrays[name], copy=True)
            if _is_matrix(name):
                scale = np.array(arrays[name + ".scale"], copy=True) if self._format == "int8" else None
                stored[name] = (arr, scale)
            else:
                values[name] = arr
        self._install(values, stored)

    def _parameters_changed(self) -> None:
        """Hook for subclasses (fastlstm.LSTM repacks its weights here)."""

    def __getattr__(self, name: str) -> np.ndarray:
        """The parameters, by torch's names (``lstm.weight_ih_l0``): read-only arrays."""
        params: Optional[Dict[str, np.ndarray]] = self.__dict__.get("_params")
        if params is not None and name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("_params")
        if params is not None and name in params:
            self._set_parameters({name: self._convert_param(name, value, params[name].shape)})
        elif name in CONFIG_ATTRIBUTES:
            raise AttributeError(
                f"{type(self).__name__}.{name} is read-only (this model was built with {name}="
                f"{getattr(self, name)!r} and its weights follow from it): for another configuration, construct a "
                f"new {type(self).__name__} with the {name} you want and give it weights with load_state_dict()"
            )
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
            **({"weights": self._format} if self._format else {}),
        )

    def __reduce__(self) -> Tuple[Any, ...]:
        """Pickle to the configuration and the parameters (about the size of the weights). Unpickling adopts the
        saved arrays and packs them once: no random initialisation, no copy, no second packing. A quantized
        model pickles its weight matrices as stored (bf16, or int8 and scales), which round-trip bitwise."""
        if self._format is not None:
            return (_unpickle_stored, (type(self), self._config(), self._stored_arrays()))
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
        if self._format:
            extra.append(f"weights={self._format!r}")
        return f"{type(self).__name__}({', '.join(extra)})"

    # ---- loaders ------------------------------------------------------------------------------

    @classmethod
    def from_torch(cls: Type[_Model], module: Any) -> _Model:
        """Build from a ``torch.nn.LSTM`` (same configuration, batch_first, dtype and weights) or a
        ``torch.nn.LSTMCell`` (a one-layer LSTM).

        torch is imported only here. float16/bfloat16 modules: ValueError (convert them first).
        """
        from . import _interop

        model: _Model = _interop.from_torch(cls, module)
        return model

    @classmethod
    def from_keras(cls: Type[_Model], layer_or_weights: Any) -> _Model:
        """Build from a Keras 3 ``LSTM`` layer, ``Bidirectional(LSTM(...))`` (merge_mode "concat") or an LSTM's
        ``get_weights()`` list; returns batch_first=True.

        kernel (I, 4H), recurrent_kernel (H, 4H), bias (4H,), gate order i, f, c, o. Activations other
        than tanh / sigmoid raise ValueError naming them. keras is not imported.
        """
        from . import _interop

        model: _Model = _interop.from_keras(cls, layer_or_weights)
        return model

    @classmethod
    def from_onnx(cls: Type[_Model], model: Any, node: Any = None) -> _Model:
        """Build from an LSTM node of an ONNX model (``onnx.ModelProto`` or a path).

        ``node``: a node name, an index among the LSTM nodes (the main graph's first, then those inside If/Loop
        subgraphs), or a NodeProto; None takes the only LSTM node of the main graph (else the only one inside
        its subgraphs), or a chain of LSTM nodes feeding one another as one stacked LSTM (a stacked torch
        export). W, R, B, P must be initializers, Constant outputs, or constant-only chains (Identity,
        Unsqueeze, Reshape, Squeeze, Transpose, Concat, Slice, Cast) on those. Supported:
        direction (lstm.direction), layout (1 gives batch_first=True), hidden_size, peepholes P, clip,
        input_forget. sequence_lens, initial_h and initial_c are runtime data: pass lengths= and hx=
        (note ONNX's Y is (T, D, B, H); ours is (T, B, D*H)). A model whose main graph has com.microsoft
        DynamicQuantizeLSTM nodes instead (what onnxruntime's ``quantize_dynamic`` writes) loads as an int8
        model, the nodes chosen the same way (several feeding one another: one stacked int8 model).
        """
        from . import _interop

        loaded: _Model = _interop.from_onnx(cls, model, node)
        return loaded

    def save(self, path: Any) -> None:
        """Write config and weights to exactly ``path``; ``fastlstm.load(path)`` reads it back bitwise.

        The file is a NumPy .npz archive with a JSON header; it loads without pickle.
        """
        from . import _interop

        _interop.save(self, path)

    # ---- calling ------------------------------------------------------------------------------

    def __call__(self, x: Any, hx: Optional[Tuple[Any, Any]] = None, *, lengths: Any = None) -> ForwardResult:
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

    def _forward_validated(self, call: "ValidatedCall") -> ForwardResult:
        raise NotImplementedError

    def _validate_call(self, x: Any, hx: Any, lengths: Any) -> "ValidatedCall":
        """Check and normalise the arguments of a call; every error of a forward pass is raised here."""
        if hx is None and lengths is None and type(x) is np.ndarray and x.ndim == 3 and x.dtype.kind == "f":
            # the common call, checked in fewer steps than below (same outcome)
            T, B = (x.shape[1], x.shape[0]) if self.batch_first else (x.shape[0], x.shape[1])
            if (x.shape[2] == self.input_size and T <= _INT_MAX and B <= _INT_MAX
                    and T * B * max(self.input_size, self._cell.num_gates * self.hidden_size) <= 2**62):
                return ValidatedCall(x, None, None, None, True, T, B)
        x = _as_numeric_array("input", x)
        if x.ndim not in (2, 3):
            raise ValueError(f"{self._cell.name.upper()}: Expected input to be 2D or 3D, got {x.ndim}D instead")
        batched = x.ndim == 3
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {x.shape[-1]}"
            )
        if batched:
            T, B = (x.shape[1], x.shape[0]) if self.batch_first else (x.shape[0], x.shape[1])
        else:
            T, B = x.shape[0], 1
        widest = max(self.input_size, self._cell.num_gates * self.hidden_size)
        if T > _INT_MAX or B > _INT_MAX or T * B * widest > 2**62:
            raise ValueError(f"input is too large: T={T}, B={B}")
        LD = self.num_layers * self.num_directions
        h_shape = (LD, B, self.out_size) if batched else (LD, self.out_size)
        c_shape = (LD, B, self.hidden_size) if batched else (LD, self.hidden_size)
        if hx is None:
            h0 = c0 = None
        elif len(self._cell.state) == 1:   # a GRU: hx is h_0 alone
            h0, c0 = _as_numeric_array("hx", hx), None
            if h0.ndim != (3 if batched else 2):
                kind = "batched 3-D" if batched else "unbatched 2-D"
                raise ValueError(
                    f"For {kind} input, hx should also be {3 if batched else 2}-D but got {h0.ndim}-D tensor: "
                    f"expected hx of shape {h_shape} for input of shape {x.shape}, got {h0.shape}"
                )
            if h0.shape != h_shape:
                raise ValueError(f"Expected hidden size {h_shape}, got {tuple(h0.shape)}")
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
            if arr.dtype == object and arr.ndim == 1 and arr.size and all(
                isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in arr
            ):  # Python ints beyond int64 are kept as objects by NumPy: out of range, not of the wrong type
                lo, hi = min(int(v) for v in arr), max(int(v) for v in arr)
                if lo < -(2**63) or hi >= 2**63:
                    raise ValueError(f"lengths: expected 1 <= lengths[b] <= T = {T}, got values from {lo} to {hi}")
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


def _is_matrix(name: str) -> bool:
    """Whether a parameter is a weight matrix (stored in a quantized model's format)."""
    return name.startswith(("weight_ih_", "weight_hh_", "weight_hr_"))


def _unpickle_stored(cls: Type[LSTMBase], config: Dict[str, Any], arrays: Mapping[str, Any]) -> LSTMBase:
    """A quantized ``cls`` of ``config`` holding the pickled stored weights (see LSTMBase._stored_arrays)."""
    model: LSTMBase = cls(**config)
    model._load_stored_arrays(arrays)
    return model


def _unpickle(cls: Type[LSTMBase], config: Dict[str, Any], params: Mapping[str, Any]) -> LSTMBase:
    """A ``cls`` of ``config`` (checked as the constructor checks it) holding the pickled ``params``."""
    model: LSTMBase = cls.__new__(cls)
    object.__setattr__(model, "_unpickled_params", params)
    type(model).__init__(model, **config)
    return model


class ValidatedCall:
    """The arguments of one forward call after validation (shapes checked, not yet converted)."""

    __slots__ = ("x", "h0", "c0", "lengths", "batched", "T", "B")

    def __init__(self, x: np.ndarray, h0: Optional[np.ndarray], c0: Optional[np.ndarray],
                 lengths: Optional[np.ndarray], batched: bool, T: int, B: int) -> None:
        self.x, self.h0, self.c0, self.lengths = x, h0, c0, lengths
        self.batched, self.T, self.B = batched, T, B
