"""The op suite: every core op, forward and backward, on random inputs against PyTorch."""

from __future__ import annotations

from .spec import ALL, FLOATS, INTS, In, OpCase

X = In((3, 4))
Y = In((3, 4))
P = In((3, 4), "pos")
A = In((3, 4), "away")
U = In((3, 4), "unit")
D = In((3, 5), "distinct")
X3 = In((2, 3, 4))
SIGNED = ("f32", "f64", "f16", "bf16", "i64")
NUM = FLOATS + ("i64",)


def _c(name: str, fn, *inputs: In, **kw) -> OpCase:  # noqa: ANN001
    return OpCase(name, fn, tuple(inputs), **kw)


CASES: list[OpCase] = []
add = CASES.append

# --- unary -------------------------------------------------------------------------------------
for _name, _kind in [("exp", X), ("log", P), ("sin", X), ("cos", X), ("tan", U), ("tanh", X), ("sqrt", P),
                     ("rsqrt", P), ("abs", A), ("neg", X), ("reciprocal", A), ("square", X), ("erf", X),
                     ("relu", A), ("sigmoid", X), ("expm1", X), ("log1p", P), ("floor", X), ("ceil", X),
                     ("round", X), ("trunc", X), ("sign", A)]:
    add(_c(_name, lambda m, x, _n=_name: getattr(x, _n)(), _kind, gradcheck=_name not in ("floor", "ceil", "round",
                                                                                            "trunc", "sign")))
add(_c("silu", lambda m, x: x * m.sigmoid(x) if m.__name__ == "torch" else x.silu(), X))
add(_c("gelu_erf", lambda m, x: m.nn.functional.gelu(x) if m.__name__ == "torch" else x.gelu(), X))
add(_c("gelu_tanh", lambda m, x: m.nn.functional.gelu(x, approximate="tanh") if m.__name__ == "torch"
       else x.gelu("tanh"), X))
add(_c("elu", lambda m, x: m.nn.functional.elu(x, 0.7) if m.__name__ == "torch" else x.elu(0.7), A))
for _name in ("abs", "neg", "square", "relu", "sign"):
    add(_c(f"{_name}_int", lambda m, x, _n=_name: getattr(x, _n)(), In((3, 4), "int"), dtypes=("i64",), grad=False))
add(_c("exp_of_int", lambda m, x: x.exp(), In((3, 4), "int", dtype="i64"), dtypes=("f32",), grad=False))

# --- affine / pow / clamp ----------------------------------------------------------------------
add(_c("affine", lambda m, x: x * 1.5 + 0.25, X))
add(_c("powf", lambda m, x: x ** 2.5, P))
add(_c("powf_neg", lambda m, x: x ** -1.5, P))
add(_c("pow_int_exp", lambda m, x: x ** 3, X))
add(_c("clamp", lambda m, x: x.clamp(-0.5, 0.7), A))
add(_c("clamp_min", lambda m, x: x.clamp(min=0.1), A))
add(_c("clamp_int", lambda m, x: x.clamp(-2, 3), In((3, 4), "int"), dtypes=("i64",), grad=False))
add(_c("clamp_tensor", lambda m, x, lo, hi: x.clamp(lo, hi + 1.0), X, In((3, 1)), In((1, 4)), gradcheck=False))

# --- binary ------------------------------------------------------------------------------------
_BIN = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
        "div": lambda a, b: a / b, "maximum": lambda a, b: a.maximum(b), "minimum": lambda a, b: a.minimum(b)}
for _name, _f in _BIN.items():
    _rhs = A if _name == "div" else Y
    add(_c(_name, lambda m, a, b, _f=_f: _f(a, b), X, _rhs))
    add(_c(f"{_name}_bcast", lambda m, a, b, _f=_f: _f(a, b), In((3, 1, 4)), In((2, 1), _rhs.kind)))
    add(_c(f"{_name}_bcast_rank", lambda m, a, b, _f=_f: _f(a, b), X3, In((4,), _rhs.kind)))
    if _name != "div":
        add(_c(f"{_name}_int", lambda m, a, b, _f=_f: _f(a, b), In((3, 4), "int"), In((1, 4), "int"),
               dtypes=("i64",), grad=False))
add(_c("add_uint", lambda m, a, b: a + b, In((3, 4), "int"), In((3, 4), "int"), dtypes=("u8", "u32"), grad=False))
add(_c("mul_uint", lambda m, a, b: a * b, In((3, 4), "int"), In((3, 4), "int"), dtypes=("u8", "u32"), grad=False))
add(_c("max_uint", lambda m, a, b: a.maximum(b), In((3, 4), "int"), In((3, 4), "int"), dtypes=("u8", "u32"),
       grad=False))
add(_c("pow", lambda m, a, b: a ** b, P, X))
add(_c("div_int", lambda m, a, b: a / (b.abs() + 1), In((3, 4), "int"), In((3, 4), "int"), dtypes=("i64",),
       grad=False))
add(_c("floor_divide", lambda m, a, b: a // b, X, A, grad=False))
add(_c("floor_divide_int", lambda m, a, b: a // (b.abs() + 1), In((3, 4), "int"), In((3, 4), "int"),
       dtypes=("i64",), grad=False))
add(_c("remainder", lambda m, a, b: a % b, X, A, grad=False))
add(_c("remainder_int", lambda m, a, b: a % (b.abs() + 1), In((3, 4), "int"), In((3, 4), "int"),
       dtypes=("i64",), grad=False))
add(_c("scalar_radd", lambda m, x: 2.5 + x, X))
add(_c("scalar_rsub", lambda m, x: 2.5 - x, X))
add(_c("scalar_rmul", lambda m, x: 3 * x, X))
add(_c("scalar_rdiv", lambda m, x: 2.0 / x, A))
add(_c("scalar_div", lambda m, x: x / 3.0, X))
add(_c("scalar_rpow", lambda m, x: 2.0 ** x, X))
add(_c("scalar_max", lambda m, x: x.clamp(min=0.0) + x.maximum(m.zeros_like(x)), A))
add(_c("int_plus_float", lambda m, x: x + 0.5, In((3, 4), "int", dtype="i64"), dtypes=("f32",), grad=False))
add(_c("int_plus_float_tensor", lambda m, a, b: a + b, In((3, 4), "int", dtype="i64"), X, dtypes=("f32", "f64")))
add(_c("promote_f16_f32", lambda m, a, b: a + b, In((3, 4), dtype="f16"), X, dtypes=("f32",)))
add(_c("promote_u8_i64", lambda m, a, b: a + b, In((3, 4), "int", dtype="u8"), In((3, 4), "int", dtype="i64"),
       dtypes=("i64",), grad=False))

# --- comparisons, where, masks ---------------------------------------------------------------
for _op in ("eq", "ne", "lt", "le", "gt", "ge"):
    add(_c(_op, lambda m, a, b, _op=_op: getattr(a, _op)(b), In((3, 4), "int"), In((1, 4), "int"), dtypes=ALL,
           grad=False))
    add(_c(f"{_op}_scalar", lambda m, a, _op=_op: getattr(a, _op)(1), In((3, 4), "int"), dtypes=ALL, grad=False))
add(_c("cmp_ops", lambda m, a, b: ((a < b) & (b > 0)) | ~(a == b), X, Y, dtypes=("f32",), grad=False,
       check_dtype=False))
add(_c("where", lambda m, c, a, b: m.where(c > 0, a, b), X, Y, In((3, 4)), gradcheck=True))
add(_c("where_bcast", lambda m, c, a, b: m.where(c > 0, a, b), In((3, 1)), In((1, 4)), In((4,))))
add(_c("where_scalar", lambda m, c, a: m.where(c > 0, a, 0.5), X, Y))
add(_c("where_int", lambda m, c, a, b: m.where(c > 0, a, b), X, In((3, 4), "int"), In((3, 4), "int"),
       dtypes=("i64", "u8"), grad=False))
add(_c("masked_fill", lambda m, x, mk: x.masked_fill(mk > 0, -1.5), X, In((1, 4), "int", dtype="i64")))
add(_c("masked_fill_int", lambda m, x, mk: x.masked_fill(mk > 0, 7), In((3, 4), "int"), In((3, 4), "int"),
       dtypes=INTS, grad=False))

# --- reductions ------------------------------------------------------------------------------
for _name in ("sum", "mean"):
    _dt = ALL if _name == "sum" else FLOATS
    add(_c(f"{_name}_all", lambda m, x, _n=_name: getattr(x, _n)(), X3, dtypes=_dt,
           tol={"bf16": (5e-2, 1e-1)}))
    add(_c(f"{_name}_dim", lambda m, x, _n=_name: getattr(x, _n)(1), X3, dtypes=_dt))
    add(_c(f"{_name}_dims_keep", lambda m, x, _n=_name: getattr(x, _n)((0, 2), keepdim=True), X3, dtypes=_dt,
           tol={"bf16": (5e-2, 1e-1)}))
    add(_c(f"{_name}_neg_dim", lambda m, x, _n=_name: getattr(x, _n)(-1), X3, dtypes=_dt))
for _name in ("amax", "amin"):
    add(_c(_name, lambda m, x, _n=_name: getattr(x, _n)(1), In((2, 5, 3), "distinct"), dtypes=NUM))
    add(_c(f"{_name}_dims", lambda m, x, _n=_name: getattr(x, _n)((0, 2), keepdim=True), In((2, 5, 3), "distinct"),
           dtypes=NUM))
    add(_c(f"{_name}_ties", lambda m, x, _n=_name: getattr(x, _n)(1), In((3, 6), "int"), dtypes=("f32", "f64"),
           gradcheck=False))
add(_c("max_all", lambda m, x: x.max(), D, dtypes=NUM))
add(_c("min_all", lambda m, x: x.min(), D, dtypes=NUM))
add(_c("max_dim", lambda m, x: tuple(x.max(1)), D, dtypes=ALL, grad=True))
add(_c("min_dim_keep", lambda m, x: tuple(x.min(0, keepdim=True)), D, dtypes=NUM))
add(_c("max_int_ties", lambda m, x: tuple(x.max(1)), In((3, 6), "int"), dtypes=INTS, grad=False))
add(_c("argmax", lambda m, x: x.argmax(1), D, dtypes=ALL, grad=False))
add(_c("argmin_keep", lambda m, x: x.argmin(0, keepdim=True), D, dtypes=ALL, grad=False))
add(_c("argmax_flat", lambda m, x: x.argmax(), D, dtypes=NUM, grad=False))
add(_c("argmax_ties", lambda m, x: x.argmax(1), In((4, 6), "int"), dtypes=ALL, grad=False))
add(_c("var", lambda m, x: x.var(1), X3))
add(_c("var_dims_unbiased0", lambda m, x: x.var((0, 2), keepdim=True, correction=0), X3))
add(_c("std", lambda m, x: x.std(), X3))
add(_c("logsumexp", lambda m, x: x.logsumexp(1), X3))
add(_c("logsumexp_dims", lambda m, x: x.logsumexp((0, 2), keepdim=True), X3))
add(_c("cumsum", lambda m, x: x.cumsum(1), X3, fused=True))
add(_c("cumsum_int", lambda m, x: x.cumsum(0), In((3, 4), "int"), dtypes=ALL, grad=False, fused=True))
add(_c("prod", lambda m, x: x.prod(1), P, grad=False))
add(_c("softmax", lambda m, x: x.softmax(-1), X3, fused=True))
add(_c("softmax_dim0", lambda m, x: x.softmax(0), X3, fused=True))
add(_c("log_softmax", lambda m, x: x.log_softmax(-1), X3, fused=True))
add(_c("log_softmax_dim1", lambda m, x: x.log_softmax(1), X3, fused=True))
add(_c("softmax_large", lambda m, x: (x * 40.0).softmax(-1), In((4, 33)), fused=True, gradcheck=False))

# --- matmul ----------------------------------------------------------------------------------
_MM = {"f16": (2e-2, 2e-2), "bf16": (6e-2, 6e-2)}
for _name, _a, _b in [("mm", (3, 4), (4, 5)), ("bmm", (2, 3, 4), (2, 4, 5)), ("mm_bcast", (3, 4), (2, 4, 5)),
                      ("bmm_bcast", (2, 1, 3, 4), (5, 4, 2)), ("mv", (3, 4), (4,)), ("vm", (4,), (4, 5)),
                      ("dot", (4,), (4,)), ("bmv", (2, 3, 4), (4,))]:
    add(_c(f"matmul_{_name}", lambda m, a, b: a @ b, In(_a), In(_b), tol=_MM, grad_tol=_MM))
add(_c("matmul_transposed", lambda m, a, b: a.transpose(-1, -2) @ b.transpose(-1, -2), In((2, 4, 3)), In((2, 5, 4)),
       tol=_MM, grad_tol=_MM))
add(_c("matmul_int", lambda m, a, b: a @ b, In((3, 4), "int"), In((4, 2), "int"), dtypes=("i64",), grad=False))

# --- views -----------------------------------------------------------------------------------
_VIEWS = {
    "reshape": lambda m, x: x.reshape(4, -1) * 2,
    "view": lambda m, x: x.view(-1) * 2,
    "transpose": lambda m, x: x.transpose(0, 2) * 2,
    "permute": lambda m, x: x.permute(2, 0, 1) * 2,
    "narrow": lambda m, x: x.narrow(2, 1, 2) * 2,
    "squeeze_unsqueeze": lambda m, x: x.unsqueeze(1).unsqueeze(-1).squeeze(1) * 2,
    "flatten": lambda m, x: x.flatten(1) * 2,
    "flatten_all": lambda m, x: x.flatten() * 2,
    "expand": lambda m, x: x[:, :1, :].expand(2, 3, 4) * 2,
    "expand_new_dims": lambda m, x: x.expand(5, 2, 3, 4) * 2,
    "broadcast_to": lambda m, x: x[:1].broadcast_to((3, 3, 4)) * 2,
    "chunk": lambda m, x: tuple(c * 2 for c in x.chunk(3, 2)),
    "split": lambda m, x: tuple(c * 2 for c in x.split(3, 2)),
    "split_sizes": lambda m, x: tuple(c * 2 for c in x.split([1, 3], 2)),
    "unbind": lambda m, x: tuple(c * 2 for c in x.unbind(1)),
    "flip": lambda m, x: x.flip(1) * 2,
    "flip_dims": lambda m, x: x.flip((0, 2)) * 2,
    "contiguous_of_transpose": lambda m, x: x.transpose(0, 1).contiguous() * 2,
    "reshape_of_transpose": lambda m, x: x.transpose(1, 2).reshape(2, -1) * 2,
    "repeat": lambda m, x: x.repeat(2, 1, 3) * 2,
    "movedim": lambda m, x: x.movedim(0, 2) * 2,
    "mT": lambda m, x: x.mT * 2,
    "unflatten": lambda m, x: x.unflatten(2, (2, 2)) * 2,
}
for _name, _f in _VIEWS.items():
    add(_c(_name, _f, X3, dtypes=FLOATS))
add(_c("transpose_int", lambda m, x: x.transpose(0, 1).contiguous(), X3, dtypes=ALL, grad=False))
add(_c("t", lambda m, x: x.t() * 2, X))

# --- indexing --------------------------------------------------------------------------------
_IDX = {
    "getitem_int": lambda m, x: x[1] * 2,
    "getitem_neg_int": lambda m, x: x[-1, 2] * 2,
    "getitem_slices": lambda m, x: x[:, 1:3, ::2] * 2,
    "getitem_step": lambda m, x: x[::2, :, 1::2] * 2,
    "getitem_none_ellipsis": lambda m, x: x[None, ..., 1, None] * 2,
    "getitem_ellipsis": lambda m, x: x[..., 1:] * 2,
    "getitem_list": lambda m, x: x[:, [2, 0, 2]] * 2,
}
for _name, _f in _IDX.items():
    add(_c(_name, _f, X3, dtypes=FLOATS))
add(_c("getitem_tensor", lambda m, x, i: x[i] * 2, X3, In((3, 2), "index", high=2)))
add(_c("getitem_tensor_dim1", lambda m, x, i: x[:, i] * 2, X3, In((5,), "index", high=3)))
add(_c("getitem_two_tensors", lambda m, x, i, j: x[i, :, j] * 2, X3, In((4,), "index", high=2),
       In((4,), "index", high=4)))
add(_c("getitem_adjacent_tensors", lambda m, x, i, j: x[:, i, j] * 2, X3, In((2, 3), "index", high=3),
       In((3,), "index", high=4)))
add(_c("getitem_mask", lambda m, x: x[x > 0] * 2, X3))
add(_c("index_select", lambda m, x, i: x.index_select(1, i), X3, In((5,), "index", high=3), dtypes=ALL))
add(_c("index_select_u32_index", lambda m, x, i: x.index_select(0, i), X3, In((3,), "index", high=2, dtype="i64")))
add(_c("gather", lambda m, x, i: x.gather(1, i), X3, In((2, 5, 4), "index", high=3), dtypes=ALL))
add(_c("gather_smaller", lambda m, x, i: x.gather(2, i), X3, In((2, 2, 3), "index", high=4)))
add(_c("scatter", lambda m, x, i, s: x.scatter(1, i, s), X3, In((2, 2, 4), "perm", high=3, dim=1), In((2, 2, 4)),
       dtypes=ALL))
add(_c("scatter_scalar", lambda m, x, i: x.scatter(1, i, 1.5), X3, In((2, 2, 4), "perm", high=3, dim=1)))
add(_c("scatter_add", lambda m, x, i, s: x.scatter_add(1, i, s), X3, In((2, 5, 4), "index", high=3),
       In((2, 5, 4)), dtypes=NUM))
add(_c("index_add", lambda m, x, i, s: x.index_add(1, i, s), X3, In((5,), "index", high=3), In((2, 5, 4)),
       dtypes=NUM))
add(_c("index_add_alpha", lambda m, x, i, s: x.index_add(0, i, s, alpha=-2.0), X, In((2,), "index", high=3),
       In((2, 4))))
add(_c("cat", lambda m, a, b: m.cat([a, b], 1), X3, In((2, 2, 4)), dtypes=ALL))
add(_c("cat_last", lambda m, a, b, c: m.cat([a, b, c], -1), X, In((3, 1)), In((3, 2))))
add(_c("stack", lambda m, a, b: m.stack([a, b], 1), X, Y, dtypes=ALL))
add(_c("tril", lambda m, x: x.tril(), In((4, 5)), dtypes=ALL))
add(_c("triu_diag", lambda m, x: x.triu(1), X3, dtypes=ALL))
add(_c("tril_neg", lambda m, x: m.tril(x, -1), In((5, 3))))

# --- sorting ---------------------------------------------------------------------------------
add(_c("sort", lambda m, x: tuple(x.sort(1)), D, dtypes=ALL))
add(_c("sort_desc", lambda m, x: tuple(x.sort(0, descending=True)), D, dtypes=NUM))
add(_c("sort_stable_ties", lambda m, x: tuple(x.sort(-1, descending=True)), In((4, 7), "int"), dtypes=ALL,
       grad=False))
add(_c("argsort", lambda m, x: x.argsort(1), D, dtypes=ALL, grad=False))
add(_c("topk", lambda m, x: tuple(x.topk(2, 1)), D, dtypes=NUM))
add(_c("topk_smallest", lambda m, x: tuple(x.topk(3, 0, largest=False)), In((5, 3), "distinct"), dtypes=NUM))

# --- casts and creation ----------------------------------------------------------------------
for _to in ("float32", "float64", "float16", "bfloat16", "int64", "uint8"):
    add(_c(f"to_{_to}", lambda m, x, _to=_to: x.to(dtype=getattr(m, _to)), In((3, 4), "int"), dtypes=ALL,
           grad=False))
add(_c("to_float_grad", lambda m, x: x.to(dtype=m.float64) * 2, X, dtypes=("f32", "f16", "bf16")))
add(_c("float_to_int_trunc", lambda m, x: (x * 3).to(dtype=m.int64), X, dtypes=FLOATS, grad=False))
add(_c("arange", lambda m: m.arange(2, 11, 3), dtypes=("i64",), grad=False))
add(_c("arange_float", lambda m: m.arange(0.5, 3.0, 0.25), dtypes=("f32",), grad=False))
add(_c("arange_dtype", lambda m: m.arange(5, dtype=m.float64) * 2, dtypes=("f64",), grad=False))
add(_c("linspace", lambda m: m.linspace(-1.0, 2.0, 7), dtypes=("f32",), grad=False))
add(_c("eye", lambda m: m.eye(3, 4), dtypes=("f32",), grad=False))
add(_c("full", lambda m: m.full((2, 3), 1.5), dtypes=("f32",), grad=False))
add(_c("full_int", lambda m: m.full((2, 3), 7), dtypes=("i64",), grad=False))
add(_c("zeros_ones", lambda m: m.cat([m.zeros(2, 3), m.ones((1, 3))]), dtypes=("f32",), grad=False))
add(_c("zeros_like", lambda m, x: m.zeros_like(x) + m.ones_like(x) * 2 + m.full_like(x, 3), X, dtypes=ALL,
       grad=False))
add(_c("tensor_from_list", lambda m: m.tensor([[1.5, 2.0], [3.0, 4.25]]) * 2, dtypes=("f32",), grad=False))
add(_c("tensor_int_list", lambda m: m.tensor([1, 2, 3]) + 1, dtypes=("i64",), grad=False))

# --- composite graphs ------------------------------------------------------------------------
add(_c("mlp_graph", lambda m, x, w, b: ((x @ w + b).tanh() ** 2).mean(-1).softmax(0), In((4, 3)), In((3, 5)),
       In((5,))))
add(_c("reuse_input", lambda m, x: x * x.exp() + x.sin() * x, X))
add(_c("inplace_free_chain", lambda m, x: (x.transpose(0, 1)[1:] * 3).sum(0), X))

# --- convolutions, pooling, upsampling, attention (their own modules) ----------------------------
from .cases_attention import ATTENTION_CASES  # noqa: E402
from .cases_conv import CONV_CASES  # noqa: E402
from .cases_nn import NN_CASES  # noqa: E402

CASES.extend(CONV_CASES)
CASES.extend(NN_CASES)
CASES.extend(ATTENTION_CASES)
