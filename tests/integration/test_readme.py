"""The README is a test (issue 16, item 5): its quickstart block runs verbatim, line
by line, with the venv's ``featurestore`` on PATH, in a fresh folder; then its
Python snippets run as written.

The one line a shell cannot run to its end, ``featurestore serve``, is started in the
background; the test asks ``GET /health`` and one lookup over a real socket, then
stops it. Every other line must exit with the code in ``EXIT`` (0 unless listed)
and print what ``EXPECT`` says, and every line must print something.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent
SERVE_PORT = 6566  # the README's "HTTP lookups on 127.0.0.1:6566"

# What each quickstart command (by its first words) must print.
EXPECT: dict[str, tuple[str, ...]] = {
    "featurestore init": ("Created feature repo",),
    "featurestore plan": ("+ feature_view driver_hourly_stats (added)",),
    "featurestore apply": ("Applied: registry version 1.",),
    "featurestore backfill": ("driver_hourly_stats: 3,360 rows read",),
    "featurestore materialize": ("driver_hourly_stats: 20 entities, 20 written",),
    "featurestore get": ("conv_rate", "PRESENT"),
    "featurestore dataset create": ("20 rows", "saved as dataset v1"),
    "featurestore dataset rebuild": ("identical",),
    "featurestore describe": ("owner: ml-platform@example.com", "rows: 3360", "used by:"),
    "featurestore list": ("driver_hourly_stats",),
    "featurestore search": ("driver_hourly_stats",),
    # The README serves with feature logging on, so the lookup the test sends is
    # logged, and the audit recomputes it: no mismatch.
    "featurestore skew audit": ("PASS",),
}
EXIT: dict[str, int] = {}


def section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + len(heading) + 2)
    return text[start : None if end < 0 else end]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def quickstart_commands() -> list[str]:
    (block,) = blocks(section(README.read_text(), "## Quickstart"), "bash")[:1]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def expected(command: str) -> tuple[tuple[str, ...], int]:
    key = max((k for k in EXPECT if command.startswith(k)), key=len, default=None)
    return (EXPECT[key], EXIT.get(key, 0)) if key else ((), 0)


def clean_env() -> dict[str, str]:
    """The venv first on PATH, and none of the caller's FEATURESTORE_* settings (a
    CI registry URL would leak into the fresh demo)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTORE_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"
    env.setdefault("NUMBA_CACHE_DIR", str(BIN.parent / "numba-cache"))
    return env


def run_line(line: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, Path]:
    """Run one README line in bash; its exit code, output, and the directory it
    left the shell in (``init demo && cd demo`` moves on)."""
    where = cwd / ".readme-cwd"
    script = f"{line}\nrc=$?\npwd > {shlex.quote(str(where))}\nexit $rc\n"
    proc = subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    moved = Path(where.read_text().strip()) if where.exists() else cwd
    where.unlink(missing_ok=True)
    return proc.returncode, proc.stdout + proc.stderr, moved


def _request(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", SERVE_PORT, timeout=10)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, None if body is None else json.dumps(body), headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def serve_briefly(line: str, cwd: Path, env: dict[str, str]) -> str:
    """Start the README's serve line in the background, check it answers, stop it."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", SERVE_PORT)) == 0:
            pytest.fail(f"port {SERVE_PORT} is taken; the README's serve line needs it free")
    proc = subprocess.Popen(
        ["bash", "-c", line],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"serve exited {proc.returncode}: {proc.stdout.read()}"  # type: ignore[union-attr]
            try:
                status, health = _request("GET", "/health")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("featurestore serve did not answer /health within 60 s")
                time.sleep(0.2)
        assert status == 200 and health["status"] == "ok", health
        assert health["registry_version"] == 1
        status, body = _request(
            "POST",
            "/v1/features/online",
            {"feature_service": "driver_ranking", "entities": {"driver_id": [1001, 1002]}},
        )
        assert status == 200, body
        assert body["features"]["conv_rate"]["statuses"] == ["PRESENT", "PRESENT"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
    return out


def test_quickstart_runs_verbatim(tmp_path: Path) -> None:
    commands = quickstart_commands()
    assert commands[0].startswith("featurestore init demo"), commands
    env = clean_env()
    cwd = tmp_path
    for line in commands:
        if "featurestore serve" in line:
            out = serve_briefly(line, cwd, env)
            assert "serving" in out and "6566" in out, out
            continue
        code, out, cwd = run_line(line, cwd, env)
        texts, exit_code = expected(line)
        assert code == exit_code, f"{line!r} exited {code}, not {exit_code}:\n{out}"
        assert out.strip(), f"{line!r} printed nothing"
        assert "Traceback" not in out, out
        for text in texts:
            assert text in out, f"{line!r} did not print {text!r}:\n{out}"
    assert cwd == tmp_path / "demo"
    assert (cwd / "train.parquet").exists()

    # Then the Python snippet of "In Python:", from the folder holding demo/.
    snippet = blocks(section(README.read_text(), "## Quickstart"), "python")[0]
    check = (
        "\nassert online.statuses['conv_rate'] == ['PRESENT', 'PRESENT'], online.statuses"
        "\nassert train.to_polars().height == spine_df.height"
        "\nprint('snippet ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", snippet + check],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "snippet ok" in proc.stdout


def test_definition_snippet_compiles(tmp_path: Path) -> None:
    """The README's "A feature repo is..." snippet, as features.py of a repo with
    the quickstart's sample data, passes `featurestore plan`."""
    snippets = blocks(section(README.read_text(), "## Quickstart"), "python")
    (definitions,) = [s for s in snippets if "FeatureView(" in s]
    env = clean_env()
    subprocess.run(
        ["featurestore", "init", "sample"], cwd=tmp_path, env=env, check=True, capture_output=True
    )
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (tmp_path / "sample" / "data" / "driver_stats.parquet").rename(
        repo / "data" / "driver_stats.parquet"
    )
    (repo / "featurestore.toml").write_text('[project]\nname = "readme"\n')
    (repo / "features.py").write_text(definitions)
    proc = subprocess.run(
        ["featurestore", "plan"], cwd=repo, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "+ feature_view driver_hourly_stats (added)" in proc.stdout
    assert "+ feature_service driver_ranking (added)" in proc.stdout
