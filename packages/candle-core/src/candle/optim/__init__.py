"""candle.optim: optimizers and learning-rate schedulers with torch.optim's API and update rules.

Updates run in place under `candle.no_grad()` with tensor ops, so they work on every backend.
"""

from . import lr_scheduler
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "RMSprop", "lr_scheduler"]
