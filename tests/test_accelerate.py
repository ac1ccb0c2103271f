"""fastlstm.torch.accelerate: an accelerated torch model gives the original model's results in every mode.

Each test builds a torch model, keeps an unaccelerated copy, accelerates the model and compares the two. Calls
that should run on fastlstm are checked to have reached it (a counter wrapped around fastlstm.LSTM.__call__ by
the ``fast_calls`` fixture); calls that need torch (gradients, dropout) are checked not to.
"""
from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from conftest import require

torch = require("torch")
import fastlstm  # noqa: E402
import fastlstm.torch  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

TOL = {torch.float32: 2e-5, torch.float64: 1e-10}

# (input_size, hidden_size, num_layers, bidirectional, proj_size, batch_first)
CONFIGS = [
    (5, 8, 1, False, 0, False),
    (6, 12, 2, True, 0, True),
    (4, 16, 2, False, 5, False),
    (7, 10, 3, True, 4, True),
]


@pytest.fixture
def fast_calls(monkeypatch):
    """A list that grows by (model, result) for each call of a fastlstm.LSTM or fastlstm.GRU (what an accelerated
    module computes with)."""
    calls = []
    for cls in (fastlstm.LSTM, fastlstm.GRU):
        def counting(self, *args, _original=cls.__call__, **kwargs):
            result = _original(self, *args, **kwargs)
            calls.append((self, result))
            return result

        monkeypatch.setattr(cls, "__call__", counting)
    return calls


def make_pair(config=CONFIGS[1], dtype=torch.float32, seed=0, **kwargs):
    """(accelerated module, unaccelerated copy with the same weights)."""
    I, H, L, bi, P, bf = config
    torch.manual_seed(seed)
    module = torch.nn.LSTM(I, H, L, bidirectional=bi, proj_size=P, batch_first=bf, **kwargs).to(dtype).eval()
    original = copy.deepcopy(module)
    assert fastlstm.torch.accelerate(module) is module
    return module, original


def states(module, B, dtype, batched=True):
    D = 2 if module.bidirectional else 1
    K = module.proj_size or module.hidden_size
    shape = (D * module.num_layers, B) if batched else (D * module.num_layers,)
    return torch.randn(*shape, K, dtype=dtype), torch.randn(*shape, module.hidden_size, dtype=dtype)


def assert_close(got, want, dtype, what="output"):
    if isinstance(got, torch.nn.utils.rnn.PackedSequence):
        assert isinstance(want, torch.nn.utils.rnn.PackedSequence)
        for name in ("batch_sizes", "sorted_indices", "unsorted_indices"):
            g, w = getattr(got, name), getattr(want, name)
            assert (g is None and w is None) or torch.equal(g, w), f"{what}.{name}: {g} != {w}"
        got, want = got.data, want.data
    elif isinstance(got, tuple):
        for i, (g, w) in enumerate(zip(got, want)):
            assert_close(g, w, dtype, f"{what}[{i}]")
        assert len(got) == len(want)
        return
    assert got.shape == want.shape and got.dtype == want.dtype, f"{what}: {got.shape} {got.dtype} vs {want.shape} " \
                                                                 f"{want.dtype}"
    diff = (got - want).abs()
    if diff.numel() and diff.max() > TOL[dtype]:
        where = torch.nonzero(diff > TOL[dtype])[:5].tolist()
        raise AssertionError(f"{what}: max |diff| {diff.max():.3g} > {TOL[dtype]}; first at {where}")


def run_both(module, original, *args, mode="no_grad"):
    context = torch.inference_mode if mode == "inference_mode" else torch.no_grad
    with context():
        return module(*args), original(*args)


# ---- every way of calling ---------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_tensor_input_with_and_without_hx(config, dtype, mode, fast_calls):
    module, original = make_pair(config, dtype)
    T, B = 7, 3
    x = torch.randn((B, T, module.input_size) if module.batch_first else (T, B, module.input_size), dtype=dtype)
    got, want = run_both(module, original, x, mode=mode)
    assert_close(got, want, dtype)
    hx = states(module, B, dtype)
    got, want = run_both(module, original, x, hx, mode=mode)
    assert_close(got, want, dtype)
    assert len(fast_calls) == 2


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unbatched_input(config, dtype, fast_calls):
    module, original = make_pair(config, dtype)
    x = torch.randn(6, module.input_size, dtype=dtype)
    assert_close(*run_both(module, original, x), dtype)
    hx = states(module, 1, dtype, batched=False)
    assert_close(*run_both(module, original, x, hx), dtype)
    assert len(fast_calls) == 2


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_packed_sequence(config, enforce_sorted, dtype, fast_calls):
    module, original = make_pair(config, dtype)
    T, B = 9, 5
    lengths = torch.tensor([9, 7, 7, 3, 1]) if enforce_sorted else torch.tensor([3, 9, 1, 7, 5])
    x = torch.randn((B, T, module.input_size) if module.batch_first else (T, B, module.input_size), dtype=dtype)
    packed = pack_padded_sequence(x, lengths, batch_first=module.batch_first, enforce_sorted=enforce_sorted)
    got, want = run_both(module, original, packed)
    assert_close(got, want, dtype)
    hx = states(module, B, dtype)
    got, want = run_both(module, original, packed, hx)
    assert_close(got, want, dtype)
    assert len(fast_calls) == 2
    padded, out_lengths = pad_packed_sequence(got[0], batch_first=module.batch_first)
    assert torch.equal(out_lengths, lengths)


def test_without_bias(fast_calls):
    module, original = make_pair(CONFIGS[3], bias=False)
    x = torch.randn(3, 6, module.input_size)
    assert_close(*run_both(module, original, x, states(module, 3, torch.float32)), torch.float32)
    packed = pack_padded_sequence(x, torch.tensor([2, 6, 4]), batch_first=True, enforce_sorted=False)
    assert_close(*run_both(module, original, packed), torch.float32)
    assert len(fast_calls) == 2


def test_packed_sequence_of_one_length_and_a_single_row(fast_calls):
    module, original = make_pair(CONFIGS[2])
    for lengths in ([4, 4, 4], [6]):
        x = torch.randn(max(lengths), len(lengths), module.input_size)
        packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
        assert_close(*run_both(module, original, packed), torch.float32)
    assert len(fast_calls) == 2


def test_non_contiguous_input_and_list_hx(fast_calls):
    module, original = make_pair(CONFIGS[1])
    x = torch.randn(10, 3, 2 * module.input_size)[:, :, ::2]
    if module.batch_first:
        x = x.transpose(0, 1)
    h, c = states(module, 3, torch.float32)
    assert_close(*run_both(module, original, x, [h, c]), torch.float32)
    assert len(fast_calls) == 1


def test_eval_and_train_mode(fast_calls):
    module, original = make_pair(CONFIGS[3])
    x = torch.randn(3, 5, module.input_size)
    module.train(), original.train()  # no dropout: training mode computes the same
    assert_close(*run_both(module, original, x), torch.float32)
    assert len(fast_calls) == 1
    module.eval(), original.eval()
    assert_close(*run_both(module, original, x), torch.float32)
    assert len(fast_calls) == 2


def test_dropout_in_training_runs_torch(fast_calls):
    module, original = make_pair(CONFIGS[1], dropout=0.5)
    x = torch.randn(3, 5, module.input_size)
    module.train()
    with torch.no_grad():
        torch.manual_seed(1)
        got = module(x)
        original.train()
        torch.manual_seed(1)
        want = original(x)
    assert_close(got, want, torch.float32)
    assert fast_calls == []
    module.eval(), original.eval()  # dropout is off in eval mode: fastlstm again
    assert_close(*run_both(module, original, x), torch.float32)
    assert len(fast_calls) == 1


def test_outputs_share_memory_with_fastlstms_arrays(fast_calls):
    module, _ = make_pair(CONFIGS[0])
    with torch.inference_mode():
        out, (h, c) = module(torch.randn(4, 2, module.input_size))
    _, (fast_out, (fast_h, fast_c)) = fast_calls[0]
    for t, a in ((out, fast_out), (h, fast_h), (c, fast_c)):
        assert t.data_ptr() == a.ctypes.data and t.shape == a.shape


# ---- gradients and training -------------------------------------------------------------------------


@pytest.mark.parametrize("packed", [False, True])
def test_with_grad_torch_computes_and_gradients_are_torchs(packed, fast_calls):
    module, original = make_pair(CONFIGS[3])
    module.train(), original.train()
    x = torch.randn(4, 6, module.input_size)
    lengths = torch.tensor([6, 2, 5, 3])
    results = []
    for m in (module, original):
        xi = x.clone().requires_grad_()
        inp = pack_padded_sequence(xi, lengths, batch_first=True, enforce_sorted=False) if packed else xi
        out, (h, c) = m(inp)
        out = out.data if packed else out
        ((out ** 2).sum() + h.sum() + c.sum()).backward()
        results.append((out.detach(), xi.grad, [p.grad for p in m.parameters()]))
    assert fast_calls == []
    (out_a, gx_a, gp_a), (out_b, gx_b, gp_b) = results
    assert torch.equal(out_a, out_b) and torch.equal(gx_a, gx_b)
    assert all(torch.equal(a, b) for a, b in zip(gp_a, gp_b))


def test_training_steps_match_and_are_seen_by_inference(fast_calls):
    module, original = make_pair(CONFIGS[2])
    x, target = torch.randn(5, 3, module.input_size), torch.randn(5, 3, module.proj_size)
    for m in (module, original):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            loss = ((m(x)[0] - target) ** 2).mean()
            loss.backward()
            opt.step()
    assert fast_calls == []
    for a, b in zip(module.parameters(), original.parameters()):
        assert torch.equal(a, b)
    assert_close(*run_both(module, original, x), torch.float32)  # the trained weights, not the first ones
    assert len(fast_calls) == 1


def test_grad_mode_with_frozen_parameters_uses_fastlstm(fast_calls):
    module, original = make_pair(CONFIGS[0])
    for m in (module, original):
        m.requires_grad_(False)
    x = torch.randn(4, 2, module.input_size)
    assert_close(module(x), original(x), torch.float32)
    assert len(fast_calls) == 1
    x.requires_grad_()  # an input that needs grad: torch
    out = module(x)[0]
    assert out.requires_grad and len(fast_calls) == 1


# ---- weights changed after accelerate -----------------------------------------------------------------


@pytest.fixture
def repacks(monkeypatch):
    """A list that grows by one each time a fastlstm model's weights are loaded (packed)."""
    loads = []
    original = fastlstm.LSTM.load_state_dict

    def counting(self, state_dict):
        loads.append(self)
        return original(self, state_dict)

    monkeypatch.setattr(fastlstm.LSTM, "load_state_dict", counting)
    return loads


def test_weights_changed_later_are_seen_and_unchanged_ones_not_repacked(repacks, fast_calls):
    module, original = make_pair(CONFIGS[2])
    x = torch.randn(6, 2, module.input_size)

    def check(expected_repacks):
        assert_close(*run_both(module, original, x), torch.float32)
        assert len(repacks) == expected_repacks

    check(1)
    check(1)  # nothing changed: no repacking
    other = torch.nn.LSTM(module.input_size, module.hidden_size, module.num_layers, proj_size=module.proj_size)
    for m in (module, original):
        m.load_state_dict(other.state_dict())
    check(2)
    with torch.no_grad():
        for m in (module, original):
            m.weight_hh_l1.mul_(0.5)
            m.bias_ih_l0[3] += 1.0
    check(3)
    check(3)
    for m in (module, original):  # a new tensor behind the same Parameter: a new data pointer, same version
        m.weight_ih_l0.data = m.weight_ih_l0.data.clone() * 2
    check(4)
    new = torch.randn_like(module.weight_hr_l0)
    for m in (module, original):  # a new Parameter object
        m.weight_hr_l0 = torch.nn.Parameter(new.clone())
    check(5)
    with torch.inference_mode():  # an in-place edit in inference mode bumps the version counter too
        for m in (module, original):
            m.bias_hh_l1.add_(0.25)
    check(6)
    assert len(fast_calls) == 8


def test_batch_first_changed_after_accelerate(fast_calls):
    module, original = make_pair(CONFIGS[1])
    x = torch.randn(3, 4, module.input_size)
    assert_close(*run_both(module, original, x), torch.float32)
    module.batch_first = original.batch_first = not module.batch_first
    assert_close(*run_both(module, original, x), torch.float32)
    assert len(fast_calls) == 2 and fast_calls[1][0].batch_first == module.batch_first


def test_one_module_called_from_many_threads(fast_calls):
    from concurrent.futures import ThreadPoolExecutor

    module, original = make_pair(CONFIGS[3])
    inputs = [torch.randn(4 + i % 3, 3, module.input_size) for i in range(24)]
    def run(x):
        with torch.inference_mode():  # grad mode is per thread
            return module(x)

    with torch.no_grad():
        want = [original(x) for x in inputs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(run, inputs))
    for g, w in zip(got, want):
        assert_close(g, w, torch.float32)
    assert len(fast_calls) == len(inputs)


def test_dtype_and_device_changes_follow_the_module(fast_calls):
    module, original = make_pair(CONFIGS[1])
    x = torch.randn(2, 4, module.input_size)
    assert_close(*run_both(module, original, x), torch.float32)
    module.double(), original.double()
    assert_close(*run_both(module, original, x.double()), torch.float64)
    assert fast_calls[-1][0].dtype == np.float64
    with pytest.raises(ValueError, match="does not match weight dtype"):  # torch's own error
        with torch.no_grad():
            module(x)
    module.half()  # float16: torch computes (whatever it does with it)
    n = len(fast_calls)
    with torch.no_grad():
        try:
            module(x.half())
        except RuntimeError:
            pass
    assert len(fast_calls) == n


def test_other_devices_run_torch(fast_calls):
    module = fastlstm.torch.accelerate(torch.nn.LSTM(3, 4, device="meta"))
    with torch.no_grad():
        out, (h, c) = module(torch.empty(5, 2, 3, device="meta"))
    assert out.device.type == "meta" and out.shape == (5, 2, 4) and h.shape == (1, 2, 4)
    assert fast_calls == []


def test_functional_call_uses_the_given_weights(fast_calls):
    module, original = make_pair(CONFIGS[0])
    other = torch.nn.LSTM(module.input_size, module.hidden_size)
    params = {k: v.detach() for k, v in other.named_parameters()}
    x = torch.randn(4, 2, module.input_size)
    with torch.no_grad():
        got = torch.func.functional_call(module, params, (x,))
        want = other(x)
        assert_close(got, want, torch.float32)
        assert_close(module(x), original(x), torch.float32)  # its own weights again afterwards
    assert len(fast_calls) == 2


# ---- the module stays what it was -------------------------------------------------------------------


def test_module_keeps_class_parameters_and_state_dict():
    torch.manual_seed(0)
    module = torch.nn.LSTM(4, 8, 2, bidirectional=True, proj_size=3)
    keys, params, text = list(module.state_dict()), list(module.parameters()), repr(module)
    fastlstm.torch.accelerate(module)
    assert isinstance(module, torch.nn.LSTM) and type(module).__name__ == "LSTM"
    assert list(module.state_dict()) == keys
    assert all(a is b for a, b in zip(module.parameters(), params))
    assert repr(module) == text
    assert fastlstm.torch.accelerate(module) is module and type(module) is type(fastlstm.torch.accelerate(module))


def test_model_with_lstms_and_a_gru_inside(fast_calls):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Linear(3, 6)
            self.lstm = torch.nn.LSTM(6, 10, batch_first=True)
            self.blocks = torch.nn.ModuleList([torch.nn.LSTM(10, 5, batch_first=True)])
            self.gru = torch.nn.GRU(5, 4, batch_first=True)

        def forward(self, x):
            y, _ = self.lstm(self.embed(x))
            y, _ = self.blocks[0](y)
            return self.gru(y)[0]

    torch.manual_seed(0)
    net = Net().eval()
    original = copy.deepcopy(net)
    keys = list(net.state_dict())
    assert fastlstm.torch.accelerate(net) is net
    assert isinstance(net.gru, torch.nn.GRU) and type(net.gru) is not torch.nn.GRU
    assert isinstance(net.lstm, torch.nn.LSTM) and type(net.lstm) is not torch.nn.LSTM
    assert isinstance(net.blocks[0], torch.nn.LSTM) and type(net.blocks[0]) is not torch.nn.LSTM
    assert list(net.state_dict()) == keys
    x = torch.randn(2, 7, 3)
    assert_close(*run_both(net, original, x), torch.float32)
    assert len(fast_calls) == 3


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gru_tensor_packed_and_unbatched_input(config, dtype, fast_calls):
    I, H, L, bi, _, bf = config
    torch.manual_seed(1)
    module = torch.nn.GRU(I, H, L, bidirectional=bi, batch_first=bf).to(dtype).eval()
    original = copy.deepcopy(module)
    assert fastlstm.torch.accelerate(module) is module and isinstance(module, torch.nn.GRU)
    T, B, D = 7, 4, 2 if bi else 1
    x = torch.randn((B, T, I) if bf else (T, B, I), dtype=dtype)
    hx = torch.randn(D * L, B, H, dtype=dtype)
    assert_close(*run_both(module, original, x), dtype)
    assert_close(*run_both(module, original, x, hx), dtype)
    packed = pack_padded_sequence(x, torch.tensor([3, 7, 1, 5]), batch_first=bf, enforce_sorted=False)
    assert_close(*run_both(module, original, packed, hx), dtype)
    assert_close(*run_both(module, original, x[0] if bf else x[:, 0], hx[:, 0]), dtype)
    assert len(fast_calls) == 4


def test_subclass_with_own_forward_is_left_alone():
    class Custom(torch.nn.LSTM):
        def forward(self, x, hx=None):
            return super().forward(x, hx)[0] * 2

    class Plain(torch.nn.LSTM):
        pass

    custom, plain = Custom(3, 4), Plain(3, 4)
    fastlstm.torch.accelerate(torch.nn.Sequential(custom, torch.nn.Identity()))
    fastlstm.torch.accelerate(plain)
    assert type(custom) is Custom
    assert isinstance(plain, Plain) and type(plain) is not Plain


def test_copy_deepcopy_and_pickle_stay_accelerated(fast_calls):
    module, original = make_pair(CONFIGS[3])
    x = torch.randn(3, 4, module.input_size)
    with torch.no_grad():
        module(x)
    for clone in (copy.deepcopy(module), pickle.loads(pickle.dumps(module)), copy.copy(module)):
        assert type(clone) is type(module)
        assert list(clone.state_dict()) == list(module.state_dict())
        assert_close(*run_both(clone, original, x), torch.float32)
    with torch.no_grad():  # the deep copies have their own weights: editing them leaves the original alone
        clone = copy.deepcopy(module)
        clone.weight_hh_l0.zero_()
        assert_close(module(x), original(x), torch.float32)
    assert len(fast_calls) == 5


def test_errors_are_torchs(fast_calls):
    module, _ = make_pair(CONFIGS[0])
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="input.size\\(-1\\) must be equal to input_size"):
            module(torch.randn(4, 2, module.input_size + 1))
        with pytest.raises(RuntimeError, match="Expected hidden\\[0\\] size"):
            module(torch.randn(4, 2, module.input_size), states(module, 3, torch.float32))
        with pytest.raises(ValueError, match="Expected input to be 2D or 3D"):
            module(torch.randn(4, 2, 2, module.input_size))
    with pytest.raises(AttributeError, match="dim"):  # NumPy states are not torch's: torch's error, with grad on
        module(torch.randn(4, 2, module.input_size), tuple(s.numpy() for s in states(module, 2, torch.float32)))
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="Expected sequence length to be larger than 0"):
            module(torch.randn(0, 2, module.input_size))
        out, (h, c) = module(torch.randn(5, 0, module.input_size))  # an empty batch is torch's too
        assert out.shape == (5, 0, module.hidden_size) and h.shape == (1, 0, module.hidden_size)
    assert fast_calls == []


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("how", ["prune", "weight_norm"])
def test_pruned_and_parametrized_modules(kind, how, fast_calls):
    """A weight computed at each call (torch.nn.utils.prune, parametrizations): accelerate runs torch's forward
    (it raised KeyError); from_torch takes the computed weight (it refused the parts)."""
    import torch.nn.utils.parametrizations
    import torch.nn.utils.prune

    torch.manual_seed(3)
    module = (torch.nn.LSTM(5, 8, 2, proj_size=3) if kind == "lstm" else torch.nn.GRU(5, 8, 2)).eval()
    if how == "prune":
        torch.nn.utils.prune.l1_unstructured(module, "weight_hh_l0", 0.5)
    else:
        torch.nn.utils.parametrizations.weight_norm(module, "weight_hh_l0")
    x = torch.randn(6, 2, 5)
    with torch.no_grad():
        want = module(x)[0]
        fast = (fastlstm.LSTM if kind == "lstm" else fastlstm.GRU).from_torch(module)
        assert_close(torch.from_numpy(fast(x.numpy())[0]), want, torch.float32)
        fast_calls.clear()
        assert torch.equal(fastlstm.torch.accelerate(module)(x)[0], want)
    assert fast_calls == []


def test_tensors_with_the_negative_bit(fast_calls):
    """A lazily negated view (the imaginary part of a conjugate) is torch's to run: .numpy() refuses it."""
    module, original = make_pair(CONFIGS[0])
    x = torch.randn(4, 2, module.input_size, dtype=torch.cfloat).conj().imag
    h, c = (torch.randn(1, 2, module.hidden_size, dtype=torch.cfloat).conj().imag for _ in range(2))
    assert x.is_neg() and h.is_neg()
    got, want = run_both(module, original, x, (h, c))
    assert_close(got[0], want[0], torch.float32)
    assert fast_calls == []


def test_edits_torch_does_not_count_are_read_after_accelerate_again(repacks, fast_calls):
    """Writes through p.data or a NumPy view change no version counter or pointer (the documented limit); a
    second accelerate reads every parameter again, and takes its own weights format."""
    module, original = make_pair(CONFIGS[0])
    x = torch.randn(6, 2, module.input_size)
    check = lambda: assert_close(*run_both(module, original, x), torch.float32)  # noqa: E731
    check()
    with torch.no_grad():
        for m in (module, original):
            m.weight_ih_l0.data.mul_(2)
            m.bias_hh_l0.detach().numpy()[:] = 0.5
    with torch.no_grad():
        assert not torch.allclose(module(x)[0], original(x)[0])   # the fastlstm copy made before the edits
    assert fastlstm.torch.accelerate(module) is module
    check()
    assert len(repacks) == 2
    fastlstm.torch.accelerate(module, weights="int8")
    with torch.no_grad():
        module(x)
    assert fast_calls[-1][0].weights == "int8"


def test_float64_module_with_reduced_weights_runs_torch_without_building(repacks, fast_calls):
    module = torch.nn.LSTM(5, 8).double().eval()
    original = copy.deepcopy(module)
    fastlstm.torch.accelerate(module, weights="bf16")
    x = torch.randn(4, 2, 5, dtype=torch.float64)
    for _ in range(3):
        got, want = run_both(module, original, x)
        assert torch.equal(got[0], want[0])
    assert not repacks and not fast_calls


def test_accelerate_arguments():
    module = torch.nn.LSTM(3, 4)
    for weights in ("float32", "int4", 1):
        with pytest.raises(ValueError, match=r"weights must be one of \[None, 'bf16', 'int8'\]") as info:
            fastlstm.torch.accelerate(module, weights=weights)
        assert repr(weights) in str(info.value)
    assert type(module) is torch.nn.LSTM  # nothing changed by a failed call
    with pytest.raises(TypeError, match="torch.nn.Module"):
        fastlstm.torch.accelerate(fastlstm.LSTM(3, 4))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("weights", ["bf16", "int8"])
def test_reduced_precision_weights(weights, kind, fast_calls):
    """weights= computes with LSTM.quantize's (GRU.quantize's) model: the bits of the quantized fastlstm model,
    near torch's."""
    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(6, 12, 2, batch_first=True).eval()
    original = copy.deepcopy(module)
    fastlstm.torch.accelerate(module, weights=weights)
    x = torch.randn(3, 9, 6)
    got, want = run_both(module, original, x)
    q = getattr(fastlstm, kind).from_torch(original).quantize(weights)
    expect = q(x.numpy())
    assert got[0].numpy().tobytes() == expect[0].tobytes()
    assert fast_calls and fast_calls[-1][0].weights == weights
    assert float((got[0] - want[0]).abs().max()) < (2e-2 if weights == "bf16" else 5e-2)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gru(bidirectional, dtype, monkeypatch):
    """An nn.GRU computes with fastlstm.GRU: tensors, hx, batch_first and PackedSequence as torch takes them."""
    calls = []
    original_call = fastlstm.GRU.__call__
    monkeypatch.setattr(fastlstm.GRU, "__call__", lambda self, *a, **k: calls.append(1) or original_call(self, *a, **k))
    torch.manual_seed(1)
    module = torch.nn.GRU(5, 9, 2, bidirectional=bidirectional, batch_first=True).to(dtype).eval()
    original = copy.deepcopy(module)
    fastlstm.torch.accelerate(module)
    assert isinstance(module, torch.nn.GRU) and type(module) is not torch.nn.GRU
    D = 2 if bidirectional else 1
    x = torch.randn(4, 7, 5, dtype=dtype)
    h0 = torch.randn(2 * D, 4, 9, dtype=dtype)
    for args in ((x,), (x, h0)):
        got, want = run_both(module, original, *args)
        assert_close(got, want, dtype)
    lengths = torch.tensor([7, 3, 5, 1])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    assert_close(*run_both(module, original, packed), dtype)
    assert len(calls) == 3


# ---- torch.compile ----------------------------------------------------------------------------------


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.front = torch.nn.Linear(4, 8)
        self.lstm = torch.nn.LSTM(8, 16, 2, batch_first=True, bidirectional=True)
        self.head = torch.nn.Linear(32, 3)

    def forward(self, x):
        y, _ = self.lstm(torch.relu(self.front(x)))
        return self.head(y)


@pytest.mark.parametrize("allow_rnn", [False, True])
def test_torch_compile_runs(allow_rnn, fast_calls):
    """torch.compile treats an LSTM as a graph break (fastlstm computes it between the compiled parts) or, with
    allow_rnn, compiles torch's own LSTM (fastlstm then steps aside)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = Net().eval()
    original = copy.deepcopy(net)
    with torch._dynamo.config.patch(allow_rnn=allow_rnn):   # (torch's own way to set its config for a while)
        compiled = torch.compile(fastlstm.torch.accelerate(net), backend="aot_eager" if allow_rnn else "inductor")
        x = torch.randn(2, 5, 4)
        with torch.no_grad():
            for _ in range(2):
                assert_close(compiled(x), original(x), torch.float32)
    assert (len(fast_calls) == 0) if allow_rnn else (len(fast_calls) == 2)
    torch._dynamo.reset()
