"""Cold start: Numba's cache goes to a writable per-user directory, and warming it
leaves nothing for a later process to compile."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SHOW_CACHE_DIR = (
    "import os, featurestore.engines, numba.core.config as c; "
    "print(os.environ['NUMBA_CACHE_DIR'], c.CACHE_DIR)"
)


def _python(code: str, env: dict[str, str]) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "XDG_"))}
    return subprocess.run(
        [sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip


def test_cache_dir_defaults_to_the_user_cache(tmp_path: Path) -> None:
    out = _python(SHOW_CACHE_DIR, {"XDG_CACHE_HOME": str(tmp_path)}).split()
    expected = str(tmp_path / "featurestore" / "numba")
    assert out == [expected, expected]
    assert Path(expected).is_dir()


def test_cache_dir_set_by_the_user_is_kept(tmp_path: Path) -> None:
    mine = str(tmp_path / "mine")
    assert _python(SHOW_CACHE_DIR, {"NUMBA_CACHE_DIR": mine}).split() == [mine, mine]


def test_unwritable_cache_home_falls_back_to_a_temp_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a directory cannot be made under a file, even by root
    out = _python(SHOW_CACHE_DIR, {"XDG_CACHE_HOME": str(blocker), "TMPDIR": str(tmp_path)})
    chosen = out.split()[0]
    assert chosen.startswith(str(tmp_path / "featurestore-"))
    assert chosen.endswith("numba")


def test_no_warm_env_skips_warming() -> None:
    code = "from featurestore.engines.warm import warm_kernels; print(warm_kernels())"
    assert _python(code, {"FEATURESTORE_NO_WARM": "1"}).strip() == "0.0"


def test_warmed_pit_kernels_are_not_compiled_again(tmp_path: Path) -> None:
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_DEBUG_CACHE": "1"}
    warmed = _python("from featurestore.engines import warm; warm._warm_pit()", env)
    assert "data saved" in warmed  # it compiled into the empty cache
    join = """
import numpy as np, polars as pl
from datetime import UTC, datetime
from featurestore.engines.pit import FeatureFrame, point_in_time_join
n = 50_000
ts = pl.Series([datetime(2024, 1, 1, tzinfo=UTC)] * n)
rows = pl.DataFrame({"id": np.arange(n), "event_ts": ts, "created_ts": ts, "x": np.ones(n)})
spine = pl.DataFrame({"id": np.arange(n)[::-1].copy(), "t": ts})
view = FeatureFrame(name="v", frame=rows, join_keys=("id",), spine_keys=("id",),
                    features=("x",), output_names=("x",), ttl_us=None)
print(point_in_time_join(spine, timestamp="t", views=[view])["x"].sum())
"""
    later = _python(join, env)
    assert "data saved" not in later
    assert later.strip().splitlines()[-1] == "50000.0"


# A kernel call after skip_blas_probe: Numba's first load must not import SciPy's
# linalg, while SciPy itself still imports for anyone else.
BLAS_PROBE = (
    "import sys, numpy as np; from featurestore._jit import skip_blas_probe; "
    "skipped = skip_blas_probe(); "
    "from featurestore.engines.pit import kernel; "
    "assert kernel.is_sorted(np.arange(3)); "
    "probed = 'scipy.linalg' in sys.modules; "
    "import scipy.linalg; "
    "print(skipped, probed, scipy.linalg.norm([3.0, 4.0]))"
)


def test_cli_process_skips_numbas_scipy_probe(tmp_path: Path) -> None:
    import scipy  # noqa: F401  (a test dependency: the probe only costs where SciPy is)

    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    assert _python(BLAS_PROBE, env).split() == ["True", "False", "5.0"]
    # Opted out: Numba probes (imports scipy.linalg) on its first kernel load.
    opted_out = _python(BLAS_PROBE, {**env, "FEATURESTORE_NUMBA_BLAS_PROBE": "1"})
    assert opted_out.split() == ["False", "True", "5.0"]
