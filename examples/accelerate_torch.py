"""Accelerate a PyTorch model in one line: its nn.LSTM computes with fastlstm, the rest stays torch.

    python examples/accelerate_torch.py

No training: a randomly initialised classifier stands in for a trained one. The model keeps its class,
parameters and state_dict; calls that need no gradient run the LSTM on fastlstm (padded batches given as a
PackedSequence go through fastlstm's lengths), training runs torch as before.
"""
import copy
import time

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fastlstm.torch


class Classifier(nn.Module):
    def __init__(self, vocab=1000, embed=64, hidden=128, classes=4):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, tokens, lengths):
        packed = pack_padded_sequence(self.embedding(tokens), lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)
        return self.head(torch.cat([h_n[-2], h_n[-1]], dim=1))


torch.manual_seed(0)
model = Classifier().eval()
original = copy.deepcopy(model)  # kept only to compare with

fastlstm.torch.accelerate(model)  # the one line; model.lstm is still an nn.LSTM
print("accelerated:", type(model.lstm).__module__, "class", type(model.lstm).__name__,
      "isinstance nn.LSTM:", isinstance(model.lstm, nn.LSTM))
assert list(model.state_dict()) == list(original.state_dict())

tokens = torch.randint(0, 1000, (8, 50))
lengths = torch.tensor([50, 12, 33, 7, 50, 41, 1, 26])


def timed(m):
    start = time.perf_counter()
    with torch.inference_mode():
        out = m(tokens, lengths)
    return out, time.perf_counter() - start


for _ in range(2):  # the first call of each also warms up
    want, t_torch = timed(original)
    got, t_fast = timed(model)
diff = (got - want).abs().max().item()
print(f"logits {tuple(got.shape)}: max |accelerated - torch| = {diff:.2e}; "
      f"torch {t_torch * 1e3:.1f} ms, accelerated {t_fast * 1e3:.1f} ms")
assert diff < 2e-5, diff

# weights changed later are picked up at the next call
with torch.no_grad():
    for m in (model, original):
        m.lstm.weight_hh_l0.mul_(0.5)
    diff = (model(tokens, lengths) - original(tokens, lengths)).abs().max().item()
print(f"after editing a weight in place: max |accelerated - torch| = {diff:.2e}")
assert diff < 2e-5, diff

# with gradients torch computes, so training is unchanged
loss = model(tokens, lengths).logsumexp(dim=1).mean()
loss.backward()
print("training step: gradient of weight_ih_l0 has norm", f"{model.lstm.weight_ih_l0.grad.norm():.4f}")
print("the accelerated model matches torch")
