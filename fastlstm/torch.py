"""fastlstm.torch: run the LSTMs inside a PyTorch model with fastlstm, in one line.

    import fastlstm.torch
    model = fastlstm.torch.accelerate(model)     # in place; also returns model

Every ``torch.nn.LSTM`` and ``torch.nn.GRU`` in the model (or the model itself) changes class to a subclass of
its own class, made here, whose ``forward`` computes with fastlstm when torch's result would need no gradient
and the tensors are float32/float64 on the CPU, and calls torch's own ``forward`` otherwise. Parameters, buffers, state_dict keys,
hooks and repr stay those of the module. Importing this module imports torch; ``import fastlstm`` does not.

The fastlstm copy of the weights is rebuilt when a parameter changed since it was made: every call compares
each parameter's identity, version counter (bumped by every in-place edit, such as ``load_state_dict`` or
``p.add_(...)`` under ``no_grad``) and data pointer (changed by ``p.data = ...``, ``model.to(...)``) with the
ones the copy was made from.

Under ``torch.compile`` an LSTM is a graph break (dynamo does not trace RNN modules), so fastlstm computes it
between the compiled parts; with ``torch._dynamo.config.allow_rnn`` dynamo traces the module, and the forward
then runs torch's own computation, which is what gets compiled. ``torch.jit.trace`` and autocast get torch's too.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple, cast

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence

from ._gru import GRU as _FastGRU
from ._lstm import LSTM as _FastLSTM

__all__ = ["accelerate"]

# the values of accelerate's ``weights``: the parameters' own dtype, or a reduced-precision format (LSTM.quantize)
_WEIGHT_FORMATS: Tuple[Optional[str], ...] = (None, "bf16", "int8")

_NUMPY_DTYPES: Dict[Any, np.dtype[Any]] = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}

# torch module class -> fastlstm class computing it
_KINDS: Dict[type, type] = {torch.nn.LSTM: _FastLSTM, torch.nn.GRU: _FastGRU}

_STATE = "_fastlstm_weights"       # the accelerated module's __dict__ entry holding its _Weights
_FORMAT = "_fastlstm_format"       # and the weight format accelerate was given (kept by copies and pickles)
_CLASSES: Dict[type, type] = {}    # torch class -> its accelerated subclass

Result = Tuple[Any, Any]  # (output tensor or PackedSequence, (h_n, c_n) or h_n)


def accelerate(model: torch.nn.Module, weights: Optional[str] = None) -> torch.nn.Module:
    """Make every ``torch.nn.LSTM`` and ``torch.nn.GRU`` in ``model`` (or ``model`` itself) compute with fastlstm;
    in place.

    Parameters
    ----------
    model : torch.nn.Module
        Any module. Each ``torch.nn.LSTM`` and ``torch.nn.GRU`` in it (``model.modules()``) becomes an instance of a subclass of its
        own class with the same parameters, state_dict keys and hooks. Its forward takes and returns what
        torch's does (tensors, ``PackedSequence``, hx) and computes with fastlstm when no gradient is needed
        (``torch.is_grad_enabled()`` is false, or neither parameters nor inputs require grad), the tensors are
        float32 or float64 on the CPU, and no dropout is active; otherwise torch's own forward runs, so
        training, other devices and ``torch.compile`` keep working. Subclasses that override ``forward`` are
        left unchanged. Parameters changed through torch (in place, ``load_state_dict``, an optimizer's step)
        are read before the next call. Edits torch does not count, through ``p.data`` or a NumPy view of a
        parameter, are not seen: call accelerate again after those. Calling it again keeps the modules, takes
        that call's ``weights`` and reads every parameter again at the next forward.
    weights : None, "bf16" or "int8"
        The weight format: None computes with the parameters' own dtype; "bf16" and "int8" with
        ``fastlstm.LSTM.quantize``'s and ``fastlstm.GRU.quantize``'s reduced-precision weights (float32 modules;
        a float64 one runs torch's own forward).

    Returns
    -------
    model, the same object.
    """
    if weights not in _WEIGHT_FORMATS:
        raise ValueError(f"weights must be one of {list(_WEIGHT_FORMATS)}, got {weights!r}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"accelerate expects a torch.nn.Module, got {type(model).__name__}")
    for module in model.modules():
        cls = type(module)
        if issubclass(cls, _Accelerated):   # again: this call's format; the fastlstm model made anew
            module.__dict__[_FORMAT] = weights
            module.__dict__[_STATE] = _Weights(module, module.__dict__[_STATE].fast_class)
            continue
        base = _kind_base(cls)
        if base is None or getattr(cls, "forward") is not getattr(base, "forward"):
            continue
        module.__class__ = _accelerated_class(cls)
        module.__dict__[_FORMAT] = weights
        module.__dict__[_STATE] = _Weights(module, _KINDS[base])
    return model


# ---- the accelerated class ------------------------------------------------------------------------


def _kind_base(cls: type) -> Optional[type]:
    """The class of _KINDS that ``cls`` derives from, or None."""
    return next((b for b in cls.__mro__ if b in _KINDS), None)


def _accelerated_class(cls: type) -> type:
    """The subclass of ``cls`` (an nn.LSTM class) whose forward computes with fastlstm; one per class."""
    sub = _CLASSES.get(cls)
    if sub is None:
        sub = type(cls.__name__, (_Accelerated, cls), {
            "__module__": __name__, "__qualname__": cls.__qualname__, "_torch_class": cls,
            "_torch_forward": getattr(cls, "forward"),
        })
        _CLASSES[cls] = sub
    return sub


def _restore(cls: type) -> Any:
    """An empty accelerated module of torch class ``cls``, for unpickling and copying (its state follows)."""
    return torch.nn.Module.__new__(_accelerated_class(cls))


class _Accelerated:
    """The forward of an accelerated module; the first base of the subclass made of the module's class."""

    _torch_class: type                    # the module's class before accelerate
    _torch_forward: Callable[..., Any]    # its forward
    training: bool
    dropout: float

    def forward(self, input: Any, hx: Any = None) -> Any:  # noqa: A002 (torch's argument name)
        """torch.nn.LSTM.forward's result, computed by fastlstm when no gradient is needed and the tensors are
        float32/float64 on the CPU; else by the module's own forward."""
        if not (torch.compiler.is_compiling() or torch.jit.is_tracing() or (self.training and self.dropout > 0)
                or torch.is_autocast_enabled("cpu")):
            result = _forward_fast(self, input, hx)
            if result is not None:
                return result
        return self._torch_forward(input, hx)

    def __reduce_ex__(self, protocol: Any) -> Tuple[Any, ...]:
        # pickle and copy by the torch class (the subclass is made at run time): restored accelerated, with a
        # fresh fastlstm copy of the weights made at its first call
        state = dict(cast(Dict[str, Any], self.__getstate__()))
        state.pop(_STATE, None)
        return _restore, (self._torch_class,), state


class _Weights:
    """The fastlstm model computing one torch module, and the parameters it was made from.

    Both are held in one attribute, replaced whole, so that calls from several threads each see a model with
    the parameters it was made from.
    """

    __slots__ = ("fast_class", "paired", "names", "made")

    def __init__(self, module: Any, fast_class: type) -> None:
        self.fast_class = fast_class
        self.paired = isinstance(module, torch.nn.LSTM)  # its state is (h, c), else h alone
        self.names: Tuple[str, ...] = tuple(module._flat_weights_names)
        # (model or None, ((name, tensor, version, data pointer) of each parameter the model was made from))
        self.made: Tuple[Any, Tuple[Tuple[str, Any, int, int], ...]] = (None, ())

    def current(self, module: Any) -> Any:
        """The fastlstm model for the module's parameters and layout as they are now, rebuilt if any parameter is
        another tensor, or has another version counter or data pointer than when the model was made, or the
        module's batch_first changed; None when the parameters are not all float32 or all float64 dense CPU
        tensors (or are inference tensors, whose edits cannot be seen), or a weight is not a parameter of the
        module (pruned or parametrized: torch computes it at each call)."""
        params = module._parameters
        model, entries = self.made
        for name, tensor, version, pointer in entries:
            p = params.get(name)
            if p is not tensor or p._version != version or p.data_ptr() != pointer:
                break
        else:
            if model is not None and model.batch_first == module.batch_first:
                return model
        return self._rebuild(module)

    def _rebuild(self, module: Any) -> Any:
        params = module._parameters
        if not all(name in params for name in self.names):
            # pruned or parametrized (torch.nn.utils.prune, parametrize): a weight is computed at each call
            self.made = (None, ())
            return None
        tensors = [params[name] for name in self.names]
        dtype = tensors[0].dtype
        fmt = module.__dict__.get(_FORMAT)
        if dtype not in _NUMPY_DTYPES or (fmt is not None and dtype != torch.float32) or not all(
                type(t) in (torch.nn.Parameter, torch.Tensor) and t.dtype == dtype and t.is_cpu
                and t.layout == torch.strided and not t.is_inference() for t in tensors):
            self.made = (None, ())   # (quantize takes float32 models only)
            return None
        projection = {"proj_size": module.proj_size} if module.proj_size else {}  # (a GRU has none)
        model = self.fast_class(
            module.input_size, module.hidden_size, module.num_layers, bias=module.bias,
            batch_first=module.batch_first, bidirectional=module.bidirectional, dtype=_NUMPY_DTYPES[dtype],
            **projection,
        )
        entries = tuple((name, t, int(t._version), int(t.data_ptr())) for name, t in zip(self.names, tensors))
        model.load_state_dict({name: t.detach().numpy() for name, t in zip(self.names, tensors)})
        if fmt is not None:
            model = model.quantize(fmt)
        self.made = (model, entries)
        return model


# ---- the fast forward -----------------------------------------------------------------------------


def _plain(t: Any) -> bool:
    """A dense CPU tensor (not a subclass such as a fake or functorch tensor) whose memory holds its values (not
    a lazily negated view such as the imaginary part of a conjugate)."""
    return type(t) is torch.Tensor and bool(t.is_cpu) and t.layout == torch.strided and not t.is_neg()


def _needs_grad(module: Any, tensors: Sequence[Any]) -> bool:
    """Whether torch would record a graph for this call: grad mode on and a parameter or input requires grad."""
    if not torch.is_grad_enabled():
        return False
    return any(t.requires_grad for t in tensors) or any(p.requires_grad for p in module._parameters.values())


def _forward_fast(module: Any, input: Any, hx: Any) -> Optional[Result]:  # noqa: A002
    """(output, state) as the module's torch forward returns them, computed by fastlstm; None when this call is
    one for torch to run (a gradient is needed, a tensor of another dtype or device, or arguments fastlstm
    rejects: torch then raises its own error). The state is (h, c) for an LSTM (h alone for a GRU)."""
    packed = type(input) is PackedSequence
    x = input.data if packed else input
    weights = module.__dict__.get(_STATE)
    if weights is None:  # restored by a copy or unpickling
        weights = module.__dict__[_STATE] = _Weights(module, _KINDS[cast(type, _kind_base(type(module)))])
    if hx is None:
        states: Tuple[Any, ...] = ()
    elif weights.paired:
        if not (type(hx) is tuple or type(hx) is list) or len(hx) != 2:
            return None
        states = tuple(hx)
    else:
        states = (hx,)
    if not _plain(x) or x.numel() == 0:  # (empty: torch's answer, an error for zero time steps)
        return None
    for s in states:
        if not _plain(s) or s.dtype != x.dtype:
            return None
    if _needs_grad(module, (x, *states)):
        return None
    fast = weights.current(module)
    if fast is None or fast.dtype != _NUMPY_DTYPES.get(x.dtype):
        return None
    if not states:
        fast_hx = None
    elif weights.paired:
        fast_hx = (states[0].numpy(), states[1].numpy())
    else:
        fast_hx = states[0].numpy()
    if packed:
        return _forward_packed(module, fast, input, fast_hx, weights.paired)
    try:
        out, state = fast(x.numpy(), fast_hx)
    except (ValueError, TypeError):
        return None
    return torch.from_numpy(out), _state_tensors(state, weights.paired)


def _state_tensors(state: Any, paired: bool) -> Any:
    """fastlstm's final state as torch returns it: (h_n, c_n) tensors, or h_n alone."""
    return (torch.from_numpy(state[0]), torch.from_numpy(state[1])) if paired else torch.from_numpy(state)


def _forward_packed(module: Any, fast: Any, packed: Any, fast_hx: Any, paired: bool) -> Optional[Result]:
    """A PackedSequence through fastlstm's ``lengths``: its rows are scattered into a padded batch in the
    original batch order (the padding is never read), and the output rows gathered back in packed order."""
    data, batch_sizes, sorted_indices, unsorted_indices = packed
    sizes = batch_sizes.numpy()
    T = len(sizes)
    if T == 0 or data.dim() != 2 or data.shape[0] != sizes.sum() or np.any(sizes[1:] > sizes[:-1]):
        return None  # not a PackedSequence that pack_padded_sequence makes: torch says what is wrong
    B = int(sizes[0])
    if sorted_indices is not None and tuple(sorted_indices.shape) != (B,):
        return None
    order = np.arange(B) if sorted_indices is None else sorted_indices.numpy()
    valid = np.arange(B) < sizes[:, None]                     # (T, B): step t of the j-th longest row exists
    lengths = np.empty(B, np.int32)
    lengths[order] = valid.sum(axis=0)
    steps = np.arange(T)[:, None]
    # each packed row's place in the padded (T, B) grid, or (B, T) for a batch-first module
    rows = (order[None, :] * T + steps if module.batch_first else steps * B + order[None, :])[valid]
    x = data.numpy()
    padded = np.empty((T * B, x.shape[1]), x.dtype)
    padded[rows] = x
    padded = padded.reshape((B, T, -1) if module.batch_first else (T, B, -1))
    try:
        out, state = fast(padded, fast_hx, lengths=lengths)
    except (ValueError, TypeError):
        return None
    out_data = out.reshape(T * B, -1).take(rows, axis=0)
    return (PackedSequence(torch.from_numpy(out_data), batch_sizes, sorted_indices, unsorted_indices),
            _state_tensors(state, paired))
