"""Core ops: each validates its inputs, computes the result's shape and dtype, records autograd
and calls the device's backend. Grouped by kind; everything is re-exported here."""

from ._base import norm_dim
from .activation import log_softmax, softmax
from .convert import dlpack_device, format_tensor, from_dlpack, to
from .conv import *  # noqa: F403
from .creation import (arange, as_tensor, empty, empty_like, eye, from_numpy, full, full_like, linspace, normal, ones,
                       ones_like, rand, rand_like, randint, randn, randn_like, randperm, tensor, uniform, zeros,
                       zeros_like)
from .elementwise import (abs, add, affine, cast, ceil, clamp, clip, cmp, cos, div, elu, eq, erf, exp, expm1, floor,
                          floor_divide, ge, gelu, gt, le, log, log1p, logical_and, logical_not, logical_or,
                          logical_xor, lt, masked_fill, maximum, minimum, mul, ne, neg, pow, powf, recip, reciprocal,
                          relu, remainder, round, rsqrt, sigmoid, sign, silu, sin, sqr, sqrt, square, sub, tan, tanh,
                          trunc, unary, where)
from .indexing import (cat, concat, copy_, gather, getitem, index_add, index_select, scatter, scatter_add, setitem,
                       stack, tril, triu)
from .linalg import bmm, matmul, mm
from .reduce import all, amax, amin, any, argmax, argmin, cumsum, logsumexp, max, mean, min, prod, std, sum, var
from .shape import (broadcast_to, chunk, clone, contiguous, expand, flatten, flip, movedim, narrow, permute, repeat,
                    reshape, split, squeeze, t, transpose, unbind, unflatten, unsqueeze, view)
from .sorting import argsort, sort, topk

__all__ = [n for n in dir() if not n.startswith("_")]
