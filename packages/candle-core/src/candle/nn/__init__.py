"""candle.nn: modules, layers and functional ops, device-agnostic (they only call core ops)."""

from . import functional, init, utils
from .attention import KVCache, MultiheadAttention, RotaryEmbedding, apply_rotary_emb, rope_frequencies
from .containers import ModuleDict, ModuleList, Sequential
from .conv import (
    AvgPool1d,
    AvgPool2d,
    Conv1d,
    Conv2d,
    ConvTranspose1d,
    ConvTranspose2d,
    MaxPool1d,
    MaxPool2d,
    Upsample,
)
from .layers import (
    ELU,
    GELU,
    GLU,
    Bilinear,
    Dropout,
    Embedding,
    Flatten,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    Identity,
    LeakyReLU,
    Linear,
    LogSigmoid,
    LogSoftmax,
    Mish,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Softsign,
    Tanh,
    Unflatten,
)
from .loss import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)
from .module import Module
from .norm import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm, RMSNorm
from .parameter import Parameter
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from .weights import MissingTensorError, WeightStore

__all__ = [n for n in dir() if not n.startswith("_") and n != "annotations"]
