"""Online store on a 3-master Redis Cluster next to one Redis node, in one run.

Writes: ``--rows`` entities (default 200k) x 6 features (int64 key; 3 float64,
2 int64, 1 string), first fresh (MSETNX path), then every row one microsecond
newer (the CAS script replaces them all). Reads: 1 and 100 entities x 2 views,
p50/p99 over ``--reads`` calls. Every server is private, on free loopback ports,
and killed by PID at the end. On one machine the three masters share its cores
with the client, so the cluster's gain here is parallel server work only; what
this measures is the price of routing (slot grouping, one call per slot).

    python benchmarks/online_cluster.py
    python benchmarks/online_cluster.py --rows 50000 --reads 500 --write-results
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import redis
from _results import append_section, cpu_model

from featurestore.stores.online import (
    OnlineStore,
    OnlineViewSchema,
    ReadRequest,
    WriteBatch,
    open_online_store,
)

SECTION = "## Online store on Redis Cluster (benchmarks/online_cluster.py)"
FEATURES = {
    "f1": "float64",
    "f2": "float64",
    "f3": "float64",
    "n1": "int64",
    "n2": "int64",
    "s": "string",
}
NOW_US = int(time.time() * 1e6)
CREATE = ("--cluster-replicas", "0", "--cluster-yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"redis-server did not start on port {port}")


@contextmanager
def servers(masters: int) -> Iterator[tuple[str, str]]:
    """A single node and a ``masters``-node cluster: their URLs."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        raise SystemExit("redis-server and redis-cli must be on PATH")
    procs: list[subprocess.Popen[bytes]] = []
    base = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with tempfile.TemporaryDirectory() as workdir:
        try:
            single = free_port()
            procs.append(
                subprocess.Popen(
                    [binary, "--port", str(single), *base, "--dir", workdir],
                    stdout=subprocess.DEVNULL,
                )
            )
            ports = [free_port() for _ in range(masters)]
            for i, port in enumerate(ports):
                node_dir = Path(workdir) / f"node{i}"
                node_dir.mkdir()
                cluster = ["--cluster-enabled", "yes", "--cluster-port", str(free_port())]
                procs.append(
                    subprocess.Popen(
                        [binary, "--port", str(port), *base, *cluster, "--dir", str(node_dir)],
                        stdout=subprocess.DEVNULL,
                    )
                )
            for port in [single, *ports]:
                _wait(port)
            subprocess.run(
                [cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports], *CREATE],
                check=True,
                capture_output=True,
            )
            deadline = time.monotonic() + 30
            while not all(
                b"cluster_state:ok" in redis.Redis(port=p).execute_command("CLUSTER", "INFO")
                for p in ports
            ):
                if time.monotonic() > deadline:
                    raise SystemExit("the cluster did not reach cluster_state:ok")
                time.sleep(0.1)
            time.sleep(1)  # let every node learn every other one
            yield f"redis://127.0.0.1:{single}/0", f"redis+cluster://127.0.0.1:{ports[0]}"
        finally:
            for proc in procs:
                proc.kill()
                proc.wait(timeout=10)


def _schema(view: str) -> OnlineViewSchema:
    return OnlineViewSchema.build(
        project="bench", view=view, keys={"id": "int64"}, features=FEATURES
    )


def _batch(n: int, bump: int) -> WriteBatch:
    ids = np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(7)
    return WriteBatch(
        keys={"id": ids},
        event_ts=np.full(n, NOW_US + bump, dtype=np.int64),
        created_ts=np.full(n, NOW_US, dtype=np.int64),
        features={
            "f1": rng.random(n),
            "f2": rng.random(n),
            "f3": rng.random(n),
            "n1": ids,
            "n2": -ids,
            "s": [f"name-{i}" for i in range(n)],
        },
    )


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(url: str, rows: int, reads: int) -> dict[str, float]:
    store: OnlineStore = open_online_store(url)
    views = [_schema("a"), _schema("b")]
    fresh, newer = _batch(rows, 0), _batch(rows, 1)
    out = {
        "fresh": rows / _timed(lambda: store.write(views[0], fresh)),
        "cas": rows / _timed(lambda: store.write(views[0], newer)),
    }
    store.write(views[1], fresh)
    rng = np.random.default_rng(1)
    for size in (1, 100):
        times = []
        for _ in range(reads):
            ids = rng.integers(0, rows, size).tolist()
            requests = [ReadRequest(v, {"id": ids}, features=["f1", "n1", "s"]) for v in views]
            times.append(_timed(lambda requests=requests: store.read(requests)))
        out[f"p50_{size}"] = float(np.percentile(times, 50) * 1e3)
        out[f"p99_{size}"] = float(np.percentile(times, 99) * 1e3)
    store.close()
    return out


def report(args: argparse.Namespace, single: dict[str, float], cluster: dict[str, float]) -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"### {when}\n",
        f"`python benchmarks/online_cluster.py --rows {args.rows} --reads {args.reads}"
        f" --write-results`: {args.rows:,} entities x 6 features; reads of 2 views x 3 features."
        f" Machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()};"
        f" load average {load} after the run. The 3 masters, the single node and the client"
        " share these cores.\n",
        "| measure | one node | 3-master cluster | cluster / node |",
        "|---|---|---|---|",
    ]
    rows = [
        ("write, fresh keys (rows/s)", "fresh", "{:,.0f}"),
        ("write, all newer: CAS (rows/s)", "cas", "{:,.0f}"),
        ("read 1 entity p50 (ms)", "p50_1", "{:.3f}"),
        ("read 1 entity p99 (ms)", "p99_1", "{:.3f}"),
        ("read 100 entities p50 (ms)", "p50_100", "{:.3f}"),
        ("read 100 entities p99 (ms)", "p99_100", "{:.3f}"),
    ]
    for label, key, fmt in rows:
        a, b = single[key], cluster[key]
        lines.append(f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {b / a:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--reads", type=int, default=1000)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    with servers(3) as (single_url, cluster_url):
        single = measure(single_url, args.rows, args.reads)
        cluster = measure(cluster_url, args.rows, args.reads)
    text = report(args, single, cluster)
    print(text)
    if args.write_results:
        append_section(SECTION, text)


if __name__ == "__main__":
    main()
