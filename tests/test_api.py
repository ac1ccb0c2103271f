"""The public API contract of fastlstm.LSTM (and of fastlstm.reference.LSTM, which shares it): constructor
validation, parameters (names, shapes, gate order, initialisation, read-only arrays, assignment), state_dict
and load_state_dict, every forward error with its message, pickling, and what `import fastlstm` imports.
"""
from __future__ import annotations

import inspect
import os
import pickle
import pydoc
import sys
import textwrap

import numpy as np
import pytest

import fastlstm
from conftest import (assert_bitwise_equal, assert_forward_bitwise, assert_forward_close, make_inputs, model_pair,
                      require, run_python)

CLASSES = [fastlstm.LSTM, fastlstm.reference.LSTM]
CLASS_IDS = ["fast", "reference"]


def expected_names(num_layers, bidirectional, bias, proj_size):
    """torch's parameter names, in torch's order (written out here, independently of fastlstm)."""
    names = []
    for layer in range(num_layers):
        for sfx in (["", "_reverse"] if bidirectional else [""]):
            names += [f"weight_ih_l{layer}{sfx}", f"weight_hh_l{layer}{sfx}"]
            if bias:
                names += [f"bias_ih_l{layer}{sfx}", f"bias_hh_l{layer}{sfx}"]
            if proj_size:
                names.append(f"weight_hr_l{layer}{sfx}")
    return names


def forward_equal(model_a, model_b, seed=0):
    args = make_inputs(model_a, 5, 3, rng=np.random.default_rng(seed), hx=True, lengths=True)
    assert_forward_bitwise(model_a(args["x"], args["hx"], lengths=args["lengths"]),
                           model_b(args["x"], args["hx"], lengths=args["lengths"]))


# ---- constructor --------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
class TestConstructor:
    @pytest.mark.parametrize("name", ["input_size", "hidden_size", "num_layers"])
    @pytest.mark.parametrize("value", ["4", 4.0, None, np.float64(4)])
    def test_size_types(self, cls, name, value):
        kw = dict(input_size=3, hidden_size=4, num_layers=1)
        kw[name] = value
        with pytest.raises(TypeError, match=name):
            cls(**kw)

    @pytest.mark.parametrize("name", ["input_size", "hidden_size", "num_layers"])
    @pytest.mark.parametrize("value", [0, -1])
    def test_non_positive_sizes(self, cls, name, value):
        kw = dict(input_size=3, hidden_size=4, num_layers=1)
        kw[name] = value
        with pytest.raises(ValueError, match=name):
            cls(**kw)

    def test_numpy_integers_accepted(self, cls):
        m = cls(np.int64(3), np.int32(4), np.uint8(2), proj_size=np.int16(2))
        assert (m.input_size, m.hidden_size, m.num_layers, m.proj_size) == (3, 4, 2, 2)
        assert all(type(v) is int for v in (m.input_size, m.hidden_size, m.num_layers, m.proj_size))

    @pytest.mark.parametrize("proj_size", [4, 5, 100])
    def test_proj_size_not_smaller_than_hidden(self, cls, proj_size):
        with pytest.raises(ValueError, match=f"proj_size={proj_size} and hidden_size=4"):
            cls(3, 4, proj_size=proj_size)

    def test_negative_proj_size(self, cls):
        with pytest.raises(ValueError, match="proj_size.*got -1"):
            cls(3, 4, proj_size=-1)

    @pytest.mark.parametrize("proj_size", [1.0, None, "2", True])
    def test_proj_size_type(self, cls, proj_size):
        with pytest.raises(TypeError, match="proj_size"):
            cls(3, 4, proj_size=proj_size)

    @pytest.mark.parametrize("name", ["bias", "batch_first", "bidirectional"])
    def test_flag_types(self, cls, name):
        with pytest.raises(TypeError, match=name):
            cls(3, 4, **{name: "yes"})

    @pytest.mark.parametrize("dtype", [np.float16, np.int32, np.complex64, "int64", bool])
    def test_unsupported_dtype(self, cls, dtype):
        with pytest.raises(ValueError, match="dtype"):
            cls(3, 4, dtype=dtype)

    @pytest.mark.parametrize("dtype", ["not-a-dtype", object()])
    def test_invalid_dtype(self, cls, dtype):
        with pytest.raises(TypeError, match="dtype"):
            cls(3, 4, dtype=dtype)

    @pytest.mark.parametrize("dtype", [np.float32, "float32", np.dtype("float64"), "float64", float])
    def test_supported_dtype_spellings(self, cls, dtype):
        m = cls(3, 4, dtype=dtype)
        assert m.dtype == np.dtype(dtype)
        assert all(v.dtype == np.dtype(dtype) for v in m.state_dict().values())

    def test_default_dtype_is_float32(self, cls):
        assert cls(3, 4).dtype == np.float32

    @pytest.mark.parametrize("seed", ["1", 1.5])
    def test_seed_type(self, cls, seed):
        with pytest.raises(TypeError, match="seed"):
            cls(3, 4, seed=seed)

    def test_negative_seed(self, cls):
        with pytest.raises(ValueError, match="seed.*got -1"):
            cls(3, 4, seed=-1)

    def test_keyword_only_options(self, cls):
        with pytest.raises(TypeError):
            cls(3, 4, 1, True)  # bias is keyword-only

    def test_direction_attribute(self, cls):
        assert cls(3, 4).direction == "forward"
        assert cls(3, 4, bidirectional=True).direction == "bidirectional"


# ---- signature, errors and the read-only configuration ---------------------------------------------------

SIGNATURE = ["input_size", "hidden_size", "num_layers", "bias", "batch_first", "bidirectional", "proj_size",
             "dtype", "seed", "peepholes", "clip", "input_forget", "direction", "weights"]
CONFIG = {"input_size": 5, "hidden_size": 8, "num_layers": 3, "bias": False, "batch_first": False,
          "bidirectional": False, "proj_size": 2, "dtype": np.float32, "peepholes": False, "clip": 2.0,
          "input_forget": True, "direction": "reverse", "num_directions": 2, "out_size": 4}


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_constructor_signature_is_explicit(cls):
    """help() and IDEs show the real parameters, not *args/**kwargs."""
    params = inspect.signature(cls).parameters
    assert list(params) == SIGNATURE
    assert all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params.values())
    assert [n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD] == SIGNATURE[:3]
    text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    assert "input_size: 'int', hidden_size: 'int', num_layers: 'int' = 1, *, bias: 'bool' = True" in text
    assert "*args" not in text and "**kwargs" not in text


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_errors_name_the_public_class(cls):
    with pytest.raises(TypeError, match=r"^LSTM\.__init__\(\) got an unexpected keyword argument 'dropout'$"):
        cls(3, 4, dropout=0.1)
    with pytest.raises(TypeError, match=r"^LSTM\.__init__\(\) missing 1 required positional argument"):
        cls(3)
    with pytest.raises(AttributeError, match=r"^'LSTM' object has no attribute 'weight_ih_l9'$"):
        cls(3, 4).weight_ih_l9


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
@pytest.mark.parametrize("name", list(CONFIG))
def test_configuration_is_read_only(cls, name):
    """Assigning a configuration attribute raises, saying how to get another configuration, and changes
    nothing: the repr, the parameters and the results stay those of the model as built."""
    m = cls(3, 4, 2, bidirectional=True, proj_size=2, seed=0)
    before_repr, before_state = repr(m), m.state_dict()
    before = getattr(m, name)
    with pytest.raises(AttributeError, match=rf"^LSTM\.{name} is read-only .*construct a new LSTM with the "
                                             rf"{name} you want and give it weights with load_state_dict\(\)$"):
        setattr(m, name, CONFIG[name])
    assert getattr(m, name) == before and repr(m) == before_repr
    assert list(m.state_dict()) == list(before_state)
    forward_equal(m, pickle.loads(pickle.dumps(m)))
    with pytest.raises(AttributeError):
        delattr(m, name)


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_another_configuration_from_a_new_model(cls, tmp_path):
    """What the error message says to do: a new model with the other configuration, then load_state_dict;
    and the models still pickle, save and load."""
    m = cls(3, 4, 2, seed=0)
    other = cls(3, 4, 2, batch_first=True)
    other.load_state_dict(m.state_dict())
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    out, _ = m(x)
    out_bf, _ = other(x.transpose(1, 0, 2))
    assert_bitwise_equal(out_bf.transpose(1, 0, 2), out)
    for copy in (pickle.loads(pickle.dumps(other)), _saved_and_loaded(other, tmp_path)):
        assert copy.batch_first and repr(copy) == repr(other)
        if type(copy) is cls:
            assert_bitwise_equal(copy(x.transpose(1, 0, 2))[0], out_bf)
        else:  # fastlstm.load gives a fast LSTM
            np.testing.assert_allclose(copy(x.transpose(1, 0, 2))[0], out_bf, atol=1e-6)


def _saved_and_loaded(model, tmp_path):
    path = tmp_path / "model.npz"
    model.save(path)
    return fastlstm.load(path)


def test_user_attributes_still_settable():
    m = fastlstm.LSTM(3, 4)
    m.name = "encoder"  # like a torch module, a model can carry the user's own attributes
    assert m.name == "encoder"


class _MyLSTM(fastlstm.LSTM):
    pass


def test_loaders_return_the_class_they_are_called_on(tmp_path):
    m = _MyLSTM(3, 4, seed=0)
    assert type(m) is _MyLSTM
    keras_weights = [np.zeros((3, 16), np.float32), np.zeros((4, 16), np.float32), np.zeros(16, np.float32)]
    assert type(_MyLSTM.from_keras(keras_weights)) is _MyLSTM
    assert type(fastlstm.reference.LSTM.from_keras(keras_weights)) is fastlstm.reference.LSTM
    assert type(pickle.loads(pickle.dumps(m))) is _MyLSTM


def test_types_as_a_user_sees_them(tmp_path):
    """mypy, on code using the installed package: py.typed and the stubs are installed, the loaders return the
    class they are called on, and a configuration attribute or an unknown keyword is an error before running."""
    api = require("mypy.api")
    (tmp_path / "user_code.py").write_text(textwrap.dedent("""
        import numpy as np
        import fastlstm

        class Mine(fastlstm.LSTM):
            pass

        reveal_type(Mine.from_onnx("model.onnx"))
        reveal_type(Mine.from_torch(object()))
        reveal_type(fastlstm.reference.LSTM.from_keras([]))
        reveal_type(fastlstm.load("model.npz"))
        reveal_type(fastlstm.LSTM(3, 4)(np.zeros((2, 3))))
        reveal_type(fastlstm.LSTM(3, 4).hidden_size)
        fastlstm.LSTM(3, 4).hidden_size = 8
        fastlstm.LSTM(3, 4, dropout=0.5)
    """))
    cwd = os.getcwd()
    os.chdir(tmp_path)  # away from a source checkout: mypy must find the installed package
    try:
        stdout, stderr, status = api.run(["--strict", "--no-incremental", "--python-executable", sys.executable,
                                          "user_code.py"])
    finally:
        os.chdir(cwd)
    reveals = [line.split('Revealed type is "')[1].rstrip('"') for line in stdout.splitlines()
               if "Revealed type is" in line]
    errors = [line for line in stdout.splitlines() if ": error:" in line]
    assert len(reveals) == 6 and len(errors) == 2 and status == 1, stdout + stderr
    assert reveals[:3] == ["user_code.Mine", "user_code.Mine", "fastlstm.reference.LSTM"]
    assert reveals[3] in ("fastlstm._lstm.LSTM | fastlstm._gru.GRU", "Union[fastlstm._lstm.LSTM, fastlstm._gru.GRU]")
    assert reveals[4].startswith("tuple[numpy.ndarray[") and reveals[4].count("numpy.ndarray[") == 3, reveals[4]
    assert reveals[5] in ("int", "builtins.int")
    assert 'Property "hidden_size" defined in "LSTMBase" is read-only' in errors[0]
    assert 'Unexpected keyword argument "dropout" for "LSTM"' in errors[1]


# ---- parameters ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
@pytest.mark.parametrize("num_layers,bidirectional,bias,proj_size", [
    (1, False, True, 0), (2, True, True, 0), (3, True, False, 2), (2, False, True, 3), (1, True, False, 0),
])
def test_parameter_names_and_shapes(cls, num_layers, bidirectional, bias, proj_size):
    I, H = 5, 6
    m = cls(I, H, num_layers, bias=bias, bidirectional=bidirectional, proj_size=proj_size, seed=0)
    names = expected_names(num_layers, bidirectional, bias, proj_size)
    assert list(m.state_dict()) == names
    D = 2 if bidirectional else 1
    K = proj_size or H
    for name in names:
        layer = int(name.split("_l")[1].split("_")[0])
        I_k = I if layer == 0 else D * K
        expected = {"weight_ih": (4 * H, I_k), "weight_hh": (4 * H, K), "bias_ih": (4 * H,), "bias_hh": (4 * H,),
                    "weight_hr": (proj_size, H)}[name[: name.index("_l")]]
        assert getattr(m, name).shape == expected, name
        assert m.state_dict()[name].shape == expected, name
    for absent in ("bias_ih_l0", "weight_hr_l0", f"weight_ih_l{num_layers}", "weight_ih_l0_reverse"):
        if absent not in names:
            with pytest.raises(AttributeError):
                getattr(m, absent)


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
@pytest.mark.parametrize("which", ["bias_ih", "bias_hh", "weight_ih", "weight_hh"])
def test_gate_order_is_i_f_g_o(cls, which):
    """One step of a 1-unit LSTM whose gates come from one parameter alone, against the equations."""
    m = cls(1, 1, dtype=np.float64, seed=0)
    sd = {k: np.zeros_like(v) for k, v in m.state_dict().items()}
    pre = np.array([0.3, -1.2, 0.7, 2.0])  # pre-activations of i, f, g, o in torch's order
    sd[f"{which}_l0"] = pre.reshape(sd[f"{which}_l0"].shape)
    m.load_state_dict(sd)
    # x = 1 and h_0 = 1 make every weight act like a bias; c_0 makes f matter
    c0 = 0.5
    out, (hn, cn) = m(np.ones((1, 1, 1)), (np.ones((1, 1, 1)), np.full((1, 1, 1), c0)))
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    i, f, g, o = sig(pre[0]), sig(pre[1]), np.tanh(pre[2]), sig(pre[3])
    c1 = f * c0 + i * g
    h1 = o * np.tanh(c1)
    assert abs(cn[0, 0, 0] - c1) < 1e-12, (cn, c1)
    assert abs(hn[0, 0, 0] - h1) < 1e-12, (hn, h1)
    assert abs(out[0, 0, 0] - h1) < 1e-12


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_projection_and_reverse_parameters_are_used(cls):
    """weight_hr maps h to h_out; *_reverse parameters drive the second half of the output."""
    m = cls(1, 2, bidirectional=True, proj_size=1, dtype=np.float64, seed=0)
    sd = {k: np.zeros_like(v) for k, v in m.state_dict().items()}
    sd["bias_ih_l0_reverse"] = np.array([5.0, 1, 5, 1, 5, 1, 5, 1])  # gate-major: i, f, g, o of units 0 and 1
    sd["weight_hr_l0_reverse"] = np.array([[2.0, -3.0]])
    m.load_state_dict(sd)
    out, (hn, cn) = m(np.zeros((1, 1, 1)))
    assert out.shape == (1, 1, 2)
    assert out[0, 0, 0] == 0.0  # forward direction: all zero parameters -> h = 0.5 * tanh(0) = 0
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    c = np.array([sig(5) * np.tanh(5), sig(1) * np.tanh(1)])
    h = np.array([sig(5), sig(1)]) * np.tanh(c)
    assert abs(out[0, 0, 1] - (2 * h[0] - 3 * h[1])) < 1e-12
    assert np.allclose(cn[1, 0], c, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
@pytest.mark.parametrize("H", [1, 9, 64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_initialisation_like_torch(cls, H, dtype):
    m = cls(7, H, 2, bidirectional=True, proj_size=H // 2, seed=123, dtype=dtype)
    bound = 1 / np.sqrt(H)
    values = []
    for name, v in m.state_dict().items():
        assert v.dtype == np.dtype(dtype)
        assert np.all(np.abs(v) <= bound * (1 + 1e-6)), f"{name} outside +-1/sqrt(H)"
        values.append(v.ravel().astype(np.float64))
    values = np.concatenate(values)
    if values.size >= 1000:
        # uniform on [-bound, bound]: Kolmogorov-Smirnov statistic against its 1e-4 critical value
        # (asymptotic, sqrt(ln(2/alpha) / 2n)); deterministic for this seed
        n = values.size
        cdf = (np.sort(values) + bound) / (2 * bound)
        ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
        critical = np.sqrt(np.log(2 / 1e-4) / (2 * n))
        assert ks < critical, f"parameters do not look uniform on +-1/sqrt(H) (KS {ks:.3g} >= {critical:.3g})"


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_initialisation_reproducible_from_seed(cls):
    kw = dict(bidirectional=True, proj_size=3, num_layers=2)
    a, b, c = cls(4, 8, seed=7, **kw), cls(4, 8, seed=7, **kw), cls(4, 8, seed=8, **kw)
    for name, va in a.state_dict().items():
        assert_bitwise_equal(va, b.state_dict()[name], name=name)
        assert not np.array_equal(va, c.state_dict()[name]), f"seeds 7 and 8 gave the same {name}"
    n1, n2 = cls(4, 8, seed=None, **kw), cls(4, 8, **kw)
    assert not np.array_equal(n1.weight_hh_l0, n2.weight_hh_l0), "seed=None must not give fixed weights"


def test_fast_and_reference_same_seed_same_weights():
    a = fastlstm.LSTM(4, 8, 2, bidirectional=True, proj_size=3, seed=5, dtype=np.float64)
    b = fastlstm.reference.LSTM(4, 8, 2, bidirectional=True, proj_size=3, seed=5, dtype=np.float64)
    for name, v in a.state_dict().items():
        assert_bitwise_equal(v, b.state_dict()[name], name=name)


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_parameters_are_read_only(cls):
    m = cls(3, 4, proj_size=2, seed=0)
    before = m.state_dict()
    for name in m.state_dict():
        p = getattr(m, name)
        assert not p.flags.writeable, name
        with pytest.raises(ValueError):
            p[...] = 1.0
        with pytest.raises(ValueError):
            p.ravel()[0] = 1.0  # ravel of a contiguous array is a view
    with pytest.raises(ValueError):
        m.weight_ih_l0 += 1  # in place on the read-only array
    for name, v in m.state_dict().items():
        assert_bitwise_equal(v, before[name], name=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["weight_ih_l1", "weight_hh_l0_reverse", "bias_ih_l0", "bias_hh_l1_reverse", "weight_hr_l0"])
def test_assigning_a_parameter_changes_the_result(name, dtype):
    fast, ref = model_pair(3, 9, 2, seed=1, bidirectional=True, proj_size=4, dtype=dtype)
    args = make_inputs(fast, 5, 3, rng=np.random.default_rng(2), hx=True, lengths=True)
    before = fast(args["x"], args["hx"], lengths=args["lengths"])
    new_value = np.random.default_rng(3).uniform(-1, 1, getattr(fast, name).shape)  # float64, and C or not
    source = np.asfortranarray(new_value) if new_value.ndim == 2 else new_value.copy()
    fast.__setattr__(name, source)
    setattr(ref, name, new_value)
    assert getattr(fast, name).dtype == np.dtype(dtype)
    assert not getattr(fast, name).flags.writeable
    assert_bitwise_equal(getattr(fast, name), new_value.astype(dtype), name=name)
    after = fast(args["x"], args["hx"], lengths=args["lengths"])
    assert not np.array_equal(after[0], before[0]), f"assigning {name} did not change the output"
    assert_forward_close(after, ref(args["x"], args["hx"], lengths=args["lengths"]), dtype)
    source[...] = 0  # the model holds a copy
    assert_forward_bitwise(fast(args["x"], args["hx"], lengths=args["lengths"]), after, what="after mutating the source")


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_assigning_a_bad_parameter_raises_and_keeps_the_old(cls):
    m = cls(3, 4, seed=0)
    old = m.weight_ih_l0.copy()
    with pytest.raises(ValueError, match="weight_ih_l0"):
        m.weight_ih_l0 = np.zeros((4, 3))
    with pytest.raises(TypeError):
        m.weight_ih_l0 = np.zeros((16, 3), bool)
    with pytest.raises(TypeError):
        m.weight_ih_l0 = np.zeros((16, 3), complex)
    assert_bitwise_equal(m.weight_ih_l0, old, name="weight_ih_l0")


# ---- state_dict / load_state_dict ---------------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_state_dict_returns_copies(cls):
    m = cls(3, 5, 2, bidirectional=True, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    out_before = m(x)
    sd = m.state_dict()
    for name, v in sd.items():
        assert isinstance(v, np.ndarray)
        assert not np.shares_memory(v, getattr(m, name)), name
        v[...] = 7  # copies are ours to change
    assert_forward_bitwise(m(x), out_before)
    assert all(np.all(v != 7) for v in m.state_dict().values())


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_bias_false_has_no_bias_keys(cls):
    m = cls(3, 5, 2, bias=False, bidirectional=True, proj_size=2, seed=0)
    assert not [k for k in m.state_dict() if k.startswith("bias")]
    sd = m.state_dict()
    sd["bias_ih_l0"] = np.zeros(20)
    with pytest.raises(ValueError, match="bias_ih_l0"):
        m.load_state_dict(sd)


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_load_state_dict_round_trip_and_conversion(cls):
    a = cls(3, 6, 2, bidirectional=True, proj_size=2, seed=0, dtype=np.float64)
    b = cls(3, 6, 2, bidirectional=True, proj_size=2, seed=1, dtype=np.float64)
    source = {k: v.tolist() for k, v in a.state_dict().items()}  # anything np.asarray accepts
    b.load_state_dict(source)
    forward_equal(a, b)
    # values are copied: changing the source afterwards changes nothing
    arrays = a.state_dict()
    b.load_state_dict(arrays)
    for v in arrays.values():
        v[...] = 0
    forward_equal(a, b)
    # float32 model from float64 arrays: converted to float32
    c = cls(3, 6, 2, bidirectional=True, proj_size=2, seed=1)
    c.load_state_dict(a.state_dict())
    for name, v in c.state_dict().items():
        assert v.dtype == np.float32
        assert_bitwise_equal(v, a.state_dict()[name].astype(np.float32), name=name)


def _failed_load(m, sd, *needles):
    before = m.state_dict()
    x = np.random.default_rng(0).standard_normal((4, 2, m.input_size)).astype(m.dtype)
    out_before = m(x)
    with pytest.raises(ValueError) as info:
        m.load_state_dict(sd)
    for needle in needles:
        assert needle in str(info.value), f"{needle!r} not in the error: {info.value}"
    for name, v in m.state_dict().items():  # nothing changed, not even the valid entries
        assert_bitwise_equal(v, before[name], name=f"{name} after a failed load")
    assert_forward_bitwise(m(x), out_before, what="after a failed load")


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_load_state_dict_missing_keys(cls):
    m = cls(3, 5, 2, bidirectional=True, seed=0)
    sd = {k: v + 1 for k, v in cls(3, 5, 2, bidirectional=True, seed=1).state_dict().items()}
    del sd["bias_hh_l1"], sd["weight_ih_l0_reverse"]
    _failed_load(m, sd, "bias_hh_l1", "weight_ih_l0_reverse")


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_load_state_dict_unexpected_keys(cls):
    m = cls(3, 5, 1, seed=0)
    sd = {k: v + 1 for k, v in m.state_dict().items()}
    sd["weight_ih_l1"] = np.zeros((20, 5))
    sd["weight_hr_l0"] = np.zeros((2, 5))
    _failed_load(m, sd, "weight_ih_l1", "weight_hr_l0")


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_load_state_dict_wrong_shapes(cls):
    m = cls(3, 5, 2, proj_size=2, seed=0)
    sd = {k: v + 1 for k, v in m.state_dict().items()}
    sd["weight_hh_l1"] = np.zeros((20, 5))  # (4H, H) where (4H, P) is expected
    sd["bias_ih_l0"] = np.zeros((20, 1))
    _failed_load(m, sd, "weight_hh_l1", "bias_ih_l0", "(20, 5)", "(20, 2)")


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_load_state_dict_all_problems_listed_together(cls):
    m = cls(3, 5, 1, bidirectional=True, seed=0)
    sd = m.state_dict()
    del sd["weight_hh_l0"]
    sd["extra"] = np.zeros(3)
    sd["bias_hh_l0_reverse"] = np.zeros(19)
    _failed_load(m, sd, "weight_hh_l0", "extra", "bias_hh_l0_reverse")


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_load_state_dict_rejects_non_numeric_and_non_mappings(cls):
    m = cls(3, 5, seed=0)
    sd = m.state_dict()
    sd["weight_ih_l0"] = np.zeros((20, 3), dtype=bool)
    with pytest.raises(TypeError):
        m.load_state_dict(sd)
    with pytest.raises(TypeError):
        m.load_state_dict(list(m.state_dict().items()))


# ---- forward errors -----------------------------------------------------------------------------


@pytest.fixture(params=CLASSES, ids=CLASS_IDS)
def cls(request):
    return request.param


@pytest.mark.parametrize("shape", [(), (4,), (2, 3, 4, 5), (1, 1, 1, 1, 5)])
def test_input_ndim(cls, shape):
    m = cls(5, 4, seed=0)
    with pytest.raises(ValueError, match=f"Expected input to be 2D or 3D, got {len(shape)}D instead"):
        m(np.zeros(shape, np.float32))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("shape", [(3, 2, 4), (3, 4), (3, 2, 6), (0, 2, 4), (3, 0, 6)])
def test_input_size_mismatch(cls, shape, batch_first):
    m = cls(5, 4, seed=0, batch_first=batch_first)
    msg = f"input.size(-1) must be equal to input_size. Expected 5, got {shape[-1]}"
    with pytest.raises(ValueError) as info:
        m(np.zeros(shape, np.float32))
    assert msg in str(info.value)


BAD_ARRAYS = {
    "bool": lambda shape: np.zeros(shape, bool),
    "complex": lambda shape: np.zeros(shape, np.complex64),
    "object": lambda shape: np.full(shape, None, dtype=object),
    "object-numbers": lambda shape: np.ones(shape, dtype=object),
    "string": lambda shape: np.full(shape, "1.0"),
    "bytes": lambda shape: np.full(shape, b"1", dtype="S1"),
    "datetime": lambda shape: np.zeros(shape, "datetime64[s]"),
}


@pytest.mark.parametrize("kind", list(BAD_ARRAYS))
def test_input_dtype_rejected(cls, kind):
    m = cls(3, 4, seed=0)
    with pytest.raises(TypeError):
        m(BAD_ARRAYS[kind]((2, 1, 3)))
    with pytest.raises(TypeError):
        m(BAD_ARRAYS[kind]((2, 3)))


def test_input_python_bools_and_strings_rejected(cls):
    m = cls(2, 4, seed=0)
    with pytest.raises(TypeError):
        m([[True, False]])
    with pytest.raises(TypeError):
        m([["a", "b"]])
    with pytest.raises(TypeError):
        m(None)


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("kind", list(BAD_ARRAYS))
def test_hx_dtype_rejected(cls, kind, which):
    m = cls(3, 4, seed=0)
    hx = [np.zeros((1, 2, 4), np.float32), np.zeros((1, 2, 4), np.float32)]
    hx[which] = BAD_ARRAYS[kind]((1, 2, 4))
    with pytest.raises(TypeError):
        m(np.zeros((5, 2, 3), np.float32), tuple(hx))


def test_hx_shapes(cls):
    m = cls(3, 6, 2, bidirectional=True, proj_size=4, seed=0)  # h (4, B, 4), c (4, B, 6)
    x = np.zeros((5, 2, 3), np.float32)
    good_h, good_c = np.zeros((4, 2, 4)), np.zeros((4, 2, 6))
    for bad_h in [np.zeros((4, 3, 4)), np.zeros((2, 2, 4)), np.zeros((4, 2, 6)), np.zeros((1, 2, 4))]:
        with pytest.raises(ValueError) as info:
            m(x, (bad_h, good_c))
        assert "Expected hidden[0] size (4, 2, 4), got " + str(bad_h.shape) in str(info.value)
    for bad_c in [np.zeros((4, 2, 4)), np.zeros((4, 1, 6)), np.zeros((2, 2, 6))]:
        with pytest.raises(ValueError) as info:
            m(x, (good_h, bad_c))
        assert "Expected hidden[1] size (4, 2, 6), got " + str(bad_c.shape) in str(info.value)
    m(x, (good_h, good_c))  # the right shapes work


def test_hx_shapes_batch_first_does_not_apply(cls):
    m = cls(3, 6, batch_first=True, seed=0)
    x = np.zeros((2, 5, 3), np.float32)  # B = 2, T = 5
    m(x, (np.zeros((1, 2, 6)), np.zeros((1, 2, 6))))
    with pytest.raises(ValueError, match=r"Expected hidden\[0\] size"):
        m(x, (np.zeros((2, 1, 6)), np.zeros((2, 1, 6))))


def test_hx_shapes_unbatched(cls):
    m = cls(3, 6, 2, proj_size=2, seed=0)
    x = np.zeros((5, 3), np.float32)
    m(x, (np.zeros((2, 2)), np.zeros((2, 6))))
    with pytest.raises(ValueError, match=r"Expected hidden\[0\] size \(2, 2\)"):
        m(x, (np.zeros((2, 6)), np.zeros((2, 6))))
    with pytest.raises(ValueError, match=r"Expected hidden\[1\] size \(2, 6\)"):
        m(x, (np.zeros((2, 2)), np.zeros((1, 6))))


def test_hx_ndim(cls):
    m = cls(3, 6, seed=0)
    with pytest.raises(ValueError, match="3-D"):
        m(np.zeros((5, 2, 3)), (np.zeros((1, 6)), np.zeros((1, 6))))  # batched input, 2-D hx
    with pytest.raises(ValueError, match="2-D"):
        m(np.zeros((5, 3)), (np.zeros((1, 1, 6)), np.zeros((1, 1, 6))))  # unbatched input, 3-D hx
    with pytest.raises(ValueError):
        m(np.zeros((5, 2, 3)), (np.zeros((1, 2, 6)), np.zeros((1, 2, 6, 1))))


@pytest.mark.parametrize("hx", [
    np.zeros((2, 1, 2, 6)),  # stacked, not a pair
    "hc",
    5,
    (np.zeros((1, 2, 6)),),
    (np.zeros((1, 2, 6)),) * 3,
    {"h": 0, "c": 1},
])
def test_hx_not_a_pair(cls, hx):
    m = cls(3, 6, seed=0)
    with pytest.raises(TypeError):
        m(np.zeros((5, 2, 3)), hx)


def test_hx_list_pair_accepted(cls):
    m = cls(3, 6, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    h = (np.full((1, 2, 6), 0.1), np.full((1, 2, 6), -0.2))
    assert_forward_bitwise(m(x, list(h)), m(x, h))


@pytest.mark.parametrize("lengths,exc", [
    ([0, 3], ValueError),
    ([5, 6], ValueError),
    ([-1, 2], ValueError),
    ([3], ValueError),
    ([3, 3, 3], ValueError),
    ([[3, 3]], ValueError),
    (3, ValueError),
    ([1.0, 2.0], TypeError),
    (np.array([1.0, 2.0], np.float32), TypeError),
    ([True, True], TypeError),
    (["1", "2"], TypeError),
    ([1 + 0j, 2], TypeError),
    ([2**70, 3], ValueError),      # beyond int64: NumPy keeps such ints as objects
    ([3, -2**70], ValueError),
])
def test_lengths_errors(cls, lengths, exc):
    m = cls(3, 4, seed=0)
    with pytest.raises(exc, match="lengths"):
        m(np.zeros((5, 2, 3), np.float32), lengths=lengths)


def test_lengths_errors_unbatched(cls):
    m = cls(3, 4, seed=0)
    x = np.zeros((5, 3), np.float32)
    for bad in ([0], [6], [2, 2]):
        with pytest.raises(ValueError, match="lengths"):
            m(x, lengths=bad)


def test_lengths_error_reports_the_range(cls):
    m = cls(3, 4, seed=0)
    with pytest.raises(ValueError) as info:
        m(np.zeros((5, 2, 3), np.float32), lengths=[2, 9])
    assert "lengths" in str(info.value) and "5" in str(info.value) and "9" in str(info.value)


@pytest.mark.parametrize("shape", [(0, 2, 3), (0, 3)])
def test_lengths_with_no_time_steps(cls, shape):
    m = cls(3, 4, seed=0)
    B = shape[1] if len(shape) == 3 else 1
    with pytest.raises(ValueError, match="lengths"):
        m(np.zeros(shape, np.float32), lengths=[1] * B)


@pytest.mark.parametrize("shape", [(2**31, 1, 3), (1, 2**31, 3)])
def test_sizes_that_overflow(cls, shape):
    m = cls(3, 4, seed=0)
    x = np.broadcast_to(np.zeros(1, np.float32), shape)  # no memory behind it
    with pytest.raises(ValueError):
        m(x)


def test_failed_calls_leave_the_model_working():
    fast, ref = model_pair(3, 6, 2, seed=0, bidirectional=True)
    args = make_inputs(fast, 4, 3, rng=np.random.default_rng(0), hx=True, lengths=True)
    want = ref(args["x"], args["hx"], lengths=args["lengths"])
    for bad in [dict(lengths=[9, 9, 9]), dict(hx=(np.zeros(3), np.zeros(3)))]:
        with pytest.raises(ValueError):
            fast(args["x"], **bad)
    assert_forward_close(fast(args["x"], args["hx"], lengths=args["lengths"]), want, np.float32)


def test_forward_alias(cls):
    m = cls(3, 6, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    assert_forward_bitwise(m.forward(x), m(x))


# ---- pickle -------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("kw", [
    dict(),
    dict(num_layers=2, bidirectional=True, proj_size=3, batch_first=True, dtype=np.float64),
    dict(num_layers=3, bias=False),
], ids=["default", "bi-proj-bf-f64", "nobias"])
def test_pickle_round_trip(kw, protocol):
    m = fastlstm.LSTM(4, 7, seed=3, **kw)
    m.weight_hh_l0 = m.weight_hh_l0 * 2  # an assigned parameter survives too
    m2 = pickle.loads(pickle.dumps(m, protocol=protocol))
    assert type(m2) is fastlstm.LSTM
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "bidirectional",
                 "proj_size", "dtype", "direction"):
        assert getattr(m2, attr) == getattr(m, attr), attr
    assert list(m2.state_dict()) == list(m.state_dict())
    for name, v in m.state_dict().items():
        assert_bitwise_equal(m2.state_dict()[name], v, name=name)
    forward_equal(m, m2)
    args = make_inputs(m, 0, 2, rng=np.random.default_rng(0))
    assert_forward_bitwise(m2(args["x"]), m(args["x"]), what="T = 0")


# ---- imports ------------------------------------------------------------------------------------


def test_import_and_forward_do_not_import_peers(tmp_path):
    proc = run_python(
        """
        import pickle, sys
        import numpy as np
        import fastlstm
        m = fastlstm.LSTM(3, 5, 2, bidirectional=True, proj_size=2, seed=0)
        m(np.zeros((4, 2, 3), np.float32), lengths=[4, 2])
        m(np.zeros((4, 3)))
        m.load_state_dict(m.state_dict())
        pickle.loads(pickle.dumps(m))
        fastlstm.reference.LSTM(3, 5, seed=0)(np.zeros((2, 3)))
        fastlstm.set_num_threads(1); fastlstm.get_num_threads(); fastlstm.openmp_enabled()
        peers = {"torch", "onnx", "onnxruntime", "keras", "tensorflow", "jax"}
        bad = sorted(k for k in sys.modules if k.split(".")[0] in peers)
        if bad:
            sys.exit("imported: " + ", ".join(bad[:10]))
        print("clean")
        """,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "clean" in proc.stdout


def test_public_names():
    for name in ("LSTM", "reference", "set_num_threads", "get_num_threads", "openmp_enabled", "__version__"):
        assert hasattr(fastlstm, name), name
    assert isinstance(fastlstm.__version__, str) and fastlstm.__version__
    assert issubclass(fastlstm.reference.LSTM, object) and fastlstm.reference.LSTM is not fastlstm.LSTM


def test_bad_isa_variable_fails_the_import(tmp_path):
    proc = run_python("import fastlstm", env={"FASTLSTM_ISA": "mmx"}, cwd=tmp_path, check_package=False)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "FASTLSTM_ISA" in proc.stderr, proc.stderr
