"""Where Numba keeps the compiled kernels (a leaf: standard library only).

Numba compiles each kernel on first use, several seconds for the whole set, and
caches the machine code so that later processes only load it (tenths of a second).
By default it caches next to the sources, in site-packages, and when that is
read-only (a system or Docker install) it tries a user-wide directory, and if none
is writable it silently compiles again in every process. So unless the user chose
``NUMBA_CACHE_DIR``, the kernels get one writable per-user directory that
``featurestore init`` warms and every later process reads (see ``configure_cache``).

The engines call ``configure_cache`` before they import Numba; ``import
featurestore`` imports neither this module's callers nor Numba.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ENV = "NUMBA_CACHE_DIR"
# Set to 1 to let Numba probe SciPy's BLAS in CLI processes too (see skip_blas_probe).
BLAS_PROBE_ENV = "FEATURESTORE_NUMBA_BLAS_PROBE"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/featurestore/numba``, else ``~/.cache/featurestore/numba``."""
    base = os.environ.get("XDG_CACHE_HOME")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "featurestore" / "numba"


def _candidates() -> list[Path]:
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    fallback = Path(tempfile.gettempdir()) / f"featurestore-{uid}" / "numba"
    try:
        return [default_cache_dir(), fallback]
    except RuntimeError:  # no home directory to be found
        return [fallback]


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError:
        return False
    return True


def configure_cache() -> str:
    """Point Numba's cache at a writable directory unless ``NUMBA_CACHE_DIR`` is
    set; returns the directory in use ("" when none is writable: Numba then
    compiles in each process, as it would anyway).

    Falls back to a per-user directory under the system's temp dir when the home
    directory is read-only or missing (a container user without a home). Called
    after Numba was imported it still applies to kernels defined later.
    """
    chosen = os.environ.get(ENV, "")
    if not chosen:
        for candidate in _candidates():
            if _writable(candidate):
                chosen = str(candidate)
                os.environ[ENV] = chosen
                break
    config = sys.modules.get("numba.core.config")
    if chosen and config is not None:
        # Numba read the environment when it was imported; its cache locator reads
        # this attribute each time a cached kernel is defined.
        config.CACHE_DIR = chosen  # type: ignore[attr-defined]
    return chosen


class _NoBlasProbe(importlib.abc.MetaPathFinder):
    """Refuses SciPy to Numba's BLAS probe (``numba.np.linalg.ensure_blas``) only.

    Numba runs that probe once per process, when the first kernel loads: it imports
    ``scipy.linalg`` wherever SciPy is installed (an ML environment almost always
    has it), which costs about 0.15 s of a 1.3 s CLI call, for linear algebra no
    featurestore kernel uses. Any other import of SciPy, before or after, goes on
    as usual; only Numba's own ``np.dot`` and ``np.linalg`` in this process then
    report SciPy missing.
    """

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] != "scipy":
            return None
        frame = sys._getframe(1)
        while frame is not None:
            code = frame.f_code
            if code.co_name == "ensure_blas" and code.co_filename.endswith(
                os.path.join("numba", "np", "linalg.py")
            ):
                raise ImportError("featurestore skips Numba's SciPy BLAS probe in its CLI")
            frame = frame.f_back  # type: ignore[assignment]
        return None


def skip_blas_probe() -> bool:
    """In a process that is only featurestore (the CLI), spare Numba's SciPy BLAS
    probe: see ``_NoBlasProbe``. Does nothing when SciPy's linalg is already
    imported (the probe is then free) or ``FEATURESTORE_NUMBA_BLAS_PROBE=1``.
    Returns whether the probe is now skipped."""
    if os.environ.get(BLAS_PROBE_ENV) == "1" or "scipy.linalg" in sys.modules:
        return False
    if not any(isinstance(f, _NoBlasProbe) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoBlasProbe())
    return True
