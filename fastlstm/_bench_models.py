"""Two PyTorch models as their users write them, and the same models after fastlstm.torch.accelerate: the
end-to-end cases of ``python -m fastlstm bench`` (section "models") and benchmarks/accelerate.py.

- text classifier: Embedding(20000, 128) -> 2-layer bidirectional LSTM(256, batch_first) -> Linear(512, 5) on
  the final states of the last layer; T=100 tokens. Batch 1 is a plain tensor; batch 32 is a padded batch of
  lengths 25..100 given to the LSTM as a PackedSequence (enforce_sorted=False);
- streaming speech model: Linear(80, 256) + ReLU -> 2-layer LSTM(512, proj_size=256) -> Linear(256, 40), one
  frame per call (batch 1) with the LSTM state carried from call to call.

Random weights stand in for trained ones. Importing this module imports torch.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from . import torch as fastlstm_torch

VOCAB, EMBED, HIDDEN, CLASSES, TOKENS = 20000, 128, 256, 5, 100
FEATURES, FRONT, SPEECH_HIDDEN, SPEECH_PROJ, SYMBOLS = 80, 256, 512, 256, 40
# largest |torch - accelerated| of the outputs that counts as agreement (float32)
TOLERANCE = 2e-5


class TextClassifier(nn.Module):  # type: ignore[misc]  # torch's types are not followed (pyproject)
    """Embedding -> 2-layer bidirectional LSTM (batch_first) -> Linear on the last layer's two final states."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMBED)
        self.lstm = nn.LSTM(EMBED, HIDDEN, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * HIDDEN, CLASSES)

    def forward(self, tokens: Any, lengths: Optional[Any] = None) -> Any:
        """tokens (B, T) int64; lengths (B,) when the batch is padded (then packed), else None -> logits (B, 5)."""
        x = self.embedding(tokens)
        if lengths is not None:
            x = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(x)
        return self.head(torch.cat([h_n[-2], h_n[-1]], dim=1))


class StreamingSpeech(nn.Module):  # type: ignore[misc]  # torch's types are not followed (pyproject)
    """Linear + ReLU front-end -> 2-layer LSTM with projection -> Linear, one frame per call."""

    def __init__(self) -> None:
        super().__init__()
        self.front = nn.Linear(FEATURES, FRONT)
        self.lstm = nn.LSTM(FRONT, SPEECH_HIDDEN, num_layers=2, proj_size=SPEECH_PROJ)
        self.head = nn.Linear(SPEECH_PROJ, SYMBOLS)

    def forward(self, frame: Any, state: Optional[Tuple[Any, Any]] = None) -> Tuple[Any, Tuple[Any, Any]]:
        """frame (B, 80) -> (logits (B, 40), state for the next frame)."""
        x = torch.relu(self.front(frame)).unsqueeze(0)  # (T=1, B, 256)
        y, state = self.lstm(x, state)
        return self.head(y[0]), state


@dataclass
class ModelCase:
    """One end-to-end case: a call of the torch model and the same call of its accelerated copy (same weights)."""

    calls_per_block: int  # a block of about 50 ms or more on the development machine
    torch_call: Callable[[], Any]
    accelerated_call: Callable[[], Any]
    max_abs_diff: float  # largest |torch - accelerated| of the outputs of the first calls


def case_runners(quick: bool = False) -> Dict[str, ModelCase]:
    """The three cases by name (text classifier at batch 1 and at batch 32 as a PackedSequence, the streaming
    speech model one frame per call); their outputs are checked here to agree within TOLERANCE (AssertionError
    otherwise). ``quick``: fewer calls per block."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    calls: Dict[str, Tuple[int, Callable[[], Any], Callable[[], Any]]] = {}

    classifier = TextClassifier().eval()
    fast_classifier = fastlstm_torch.accelerate(copy.deepcopy(classifier))
    tokens1 = torch.randint(0, VOCAB, (1, TOKENS), generator=gen)
    tokens32 = torch.randint(0, VOCAB, (32, TOKENS), generator=gen)
    lengths32 = torch.randint(TOKENS // 4, TOKENS + 1, (32,), generator=gen)
    lengths32[0] = TOKENS
    tokens32[torch.arange(TOKENS)[None, :] >= lengths32[:, None]] = 0  # padding
    calls["text classifier, batch 1"] = (5 if quick else 20, lambda: classifier(tokens1),
                                         lambda: fast_classifier(tokens1))
    calls["text classifier, batch 32, PackedSequence"] = (
        1 if quick else 3, lambda: classifier(tokens32, lengths32), lambda: fast_classifier(tokens32, lengths32))

    speech = StreamingSpeech().eval()
    fast_speech = fastlstm_torch.accelerate(copy.deepcopy(speech))
    frames = torch.randn(64, 1, FEATURES, generator=gen)

    def stream(model: nn.Module) -> Callable[[], Any]:
        carried: Dict[str, Any] = {"state": None, "i": 0}

        def call() -> Any:
            i = carried["i"] = (carried["i"] + 1) % len(frames)
            logits, carried["state"] = model(frames[i], carried["state"])
            return logits

        return call

    calls["streaming speech, one frame per call"] = (50 if quick else 200, stream(speech), stream(fast_speech))

    cases = {}
    with torch.inference_mode(), warnings.catch_warnings():
        # torch's notice at its first LSTM with projection (once per process), not about this comparison
        warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
        for name, (count, slow, fast) in calls.items():
            cases[name] = ModelCase(count, slow, fast, max_difference(name, slow, fast))
    return cases


def max_difference(name: str, slow: Callable[[], Any], fast: Callable[[], Any]) -> float:
    """The largest |slow() - fast()| over three calls of each (the streaming case's state carried);
    AssertionError naming the case when it exceeds TOLERANCE."""
    worst = 0.0
    for _ in range(3):
        diff = float((slow() - fast()).abs().max())
        if not diff <= TOLERANCE:
            raise AssertionError(f"{name}: accelerated output differs from torch's by {diff:.3g}")
        worst = max(worst, diff)
    return worst
