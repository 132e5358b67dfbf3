"""Datasets and a batching `DataLoader`, shaped like `torch.utils.data`.

Shuffling draws a permutation on the host from a seed, so a given `seed` (or `candle.Generator`)
gives the same batches on every backend; each pass over the loader draws a new permutation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from .. import random as _random
from ..errors import ShapeError
from ..ops.creation import from_numpy, tensor
from ..ops.indexing import stack
from ..tensor import Tensor

__all__ = ["DataLoader", "Dataset", "Subset", "TensorDataset", "default_collate", "random_split"]

T = TypeVar("T")


class Dataset(Generic[T]):
    """A map-style dataset: subclasses define `__getitem__(index)` and `__len__()`."""

    def __getitem__(self, index: int) -> T:
        raise NotImplementedError(f"{type(self).__name__} does not implement __getitem__")

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} does not implement __len__")


class TensorDataset(Dataset[tuple[Tensor, ...]]):
    """Samples are `(t[i] for t in tensors)`; every tensor has the same first dimension."""

    def __init__(self, *tensors: Tensor) -> None:
        if not tensors:
            raise ShapeError("TensorDataset needs at least one tensor")
        n = tensors[0].shape[0] if tensors[0].ndim else None
        if n is None or any(t.ndim == 0 or t.shape[0] != n for t in tensors):
            raise ShapeError("TensorDataset: tensors must share their first dimension, got shapes "
                             + ", ".join(str(list(t.shape)) for t in tensors))
        self.tensors = tensors

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def batch(self, indices: np.ndarray | slice) -> tuple[Tensor, ...]:
        """Samples `indices` stacked, with one indexing op per tensor (new tensors, never views)."""
        if isinstance(indices, slice):
            return tuple(t[indices].clone() for t in self.tensors)
        return tuple(t.index_select(0, tensor(indices, device=t.device)) for t in self.tensors)


class Subset(Dataset[T]):
    """The samples of `dataset` at `indices`."""

    def __init__(self, dataset: Dataset[T], indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __getitem__(self, index: int) -> T:
        return self.dataset[self.indices[index]]

    def __len__(self) -> int:
        return len(self.indices)


def _permutation(n: int, generator: _random.Generator) -> np.ndarray:
    """A permutation of range(n) drawn on the host from the generator's next seed."""
    return np.random.default_rng(generator.next_seed()).permutation(n)


def random_split(dataset: Dataset[T], lengths: Sequence[int | float], seed: int | None = None,
                 generator: _random.Generator | None = None) -> list[Subset[T]]:
    """Split into non-overlapping random subsets of `lengths` (counts, or fractions that sum to 1,
    with the remainder spread round-robin like torch)."""
    n = len(dataset)
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        counts = [int(math.floor(n * f)) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
    else:
        counts = [int(c) for c in lengths]
    if sum(counts) != n:
        raise ValueError(f"random_split: lengths sum to {sum(counts)}, the dataset holds {n} samples")
    perm = _permutation(n, _generator(seed, generator)).tolist()
    out, start = [], 0
    for c in counts:
        out.append(Subset(dataset, perm[start:start + c]))
        start += c
    return out


def default_collate(batch: Sequence[Any]) -> Any:
    """Stack a list of samples: tensors (and numpy arrays) are stacked along a new first dim, ints
    become an int64 tensor, floats a float64 tensor; tuples, lists and dicts are collated per field."""
    first = batch[0]
    if isinstance(first, Tensor):
        return stack(list(batch))
    if isinstance(first, np.ndarray):
        return from_numpy(np.stack(batch))
    if isinstance(first, bool) or isinstance(first, int):
        return tensor(list(batch), dtype="int64")
    if isinstance(first, float):
        return tensor(list(batch), dtype="float64")
    if isinstance(first, (str, bytes)):
        return list(batch)
    if isinstance(first, Mapping):
        return {k: default_collate([s[k] for s in batch]) for k in first}
    if isinstance(first, (tuple, list)):
        if any(len(s) != len(first) for s in batch):
            raise ShapeError("default_collate: samples in a batch have different numbers of fields")
        fields = [default_collate(list(f)) for f in zip(*batch)]
        return tuple(fields) if isinstance(first, tuple) else fields
    raise TypeError(f"default_collate: cannot batch samples of type {type(first).__name__}")


def _generator(seed: int | None, generator: _random.Generator | None) -> _random.Generator:
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if generator is not None:
        return generator
    return _random.Generator(seed) if seed is not None else _random.default_generator


class DataLoader(Generic[T]):
    """Batches of a dataset: `for x, y in DataLoader(TensorDataset(X, Y), batch_size=32, shuffle=True, seed=0)`.

    `batch_size=None` yields single samples. Without `collate_fn`, a `TensorDataset` (or a `Subset`
    of one) is batched with one indexing op per tensor; other datasets go through `default_collate`.
    Shuffling uses `generator` (a `candle.Generator`), else a generator seeded with `seed`, else
    candle's default generator (seeded by `candle.manual_seed`).
    """

    def __init__(self, dataset: Dataset[T], batch_size: int | None = 1, shuffle: bool = False, *,
                 drop_last: bool = False, collate_fn: Callable[[list[T]], Any] | None = None,
                 seed: int | None = None, generator: _random.Generator | None = None) -> None:
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size <= 0):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, shuffle, drop_last
        self.collate_fn = collate_fn
        self.generator = _generator(seed, generator)

    def __len__(self) -> int:
        n = len(self.dataset)
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _index_batches(self) -> Iterator[np.ndarray | slice]:
        n, bs = len(self.dataset), self.batch_size or 1
        order = _permutation(n, self.generator) if self.shuffle else None
        stop = n - n % bs if self.drop_last else n
        for start in range(0, stop, bs):
            end = min(start + bs, n)
            yield slice(start, end) if order is None else order[start:end]

    def __iter__(self) -> Iterator[Any]:
        ds = self.dataset
        for idx in self._index_batches():
            if self.batch_size is None:
                i = idx.start if isinstance(idx, slice) else int(idx[0])
                yield ds[i]
            elif self.collate_fn is None and (fast := _tensor_batch(ds, idx)) is not None:
                yield fast
            else:
                ids = range(idx.start, idx.stop) if isinstance(idx, slice) else idx.tolist()
                samples = [ds[i] for i in ids]
                yield (self.collate_fn or default_collate)(samples)


def _tensor_batch(ds: Dataset[Any], idx: np.ndarray | slice) -> tuple[Tensor, ...] | None:
    """The batch of a TensorDataset (or a Subset of one) in one indexing op per tensor; else None."""
    if isinstance(ds, TensorDataset):
        return ds.batch(idx)
    if isinstance(ds, Subset) and isinstance(ds.dataset, TensorDataset):
        return ds.dataset.batch(np.asarray(ds.indices, dtype=np.int64)[idx])
    return None
