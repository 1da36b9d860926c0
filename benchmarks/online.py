"""Online serving: in-process and HTTP lookups against a private Redis, next to their floors.

Data: a generated repo with ``--entities`` drivers (default 100k), two views of
three features (service ``ranking``: 6 features) and one view of 50 features
(service ``wide``), one recent row per driver, materialized into a private
redis-server started on a free loopback port. Then, in the same run:

- floors: ``redis-benchmark`` GET (C client: c=1 latency, c=32 throughput);
- latency, per lookup shape (1 and 100 entities x 6 and 50 features), three ways
  interleaved call by call, ``--requests`` times: raw redis-py ``MGET`` of exactly
  the keys the lookup reads (the floor), ``FeatureStore.get_online_features``
  in-process, and HTTP at concurrency 1 (POSTs on one keep-alive ``http.client``
  connection; httpx would add ~1 ms by itself). Interleaving makes every way see
  the same moments of a shared, noisy machine, so the ratios hold when p99s swing;
- with ``--feast-route``, a fourth way in the same loop: the same body POSTed to
  Feast's ``/get-online-features`` (issue 19: within 10% of the native route);
- HTTP throughput at concurrency 8 and 32 with ``wrk`` (a Lua script builds a
  random POST body per request) against ``--workers`` server processes, with the
  CPU each request cost the server, Redis and wrk (from /proc): on a busy machine
  that is the steadier figure, and 2 cores / its sum is what an idle one gives.

Every loop is bounded in count and time; the servers are stopped by PID at the end.

    python benchmarks/online.py
    python benchmarks/online.py --entities 20000 --requests 500 --duration 3
    python benchmarks/online.py --write-results    # appends to benchmarks/RESULTS.md
    python benchmarks/online.py --feast-route      # and Feast's route, call by call
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from _results import append_section, cpu_model

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
SECTION = "## Online serving (benchmarks/online.py)"
LOOKUP = "/v1/features/online"
FEAST_LOOKUP = "/get-online-features"  # server/feast_compat.py; --feast-route
FEAST_ROUTE_TARGET = 0.10  # issue 19: the Feast route within 10% of the native one
SEED = 20
# (lookup shape, how it is served) -> (percentile, target in ms)
TARGETS = {
    ("1 entity x 6 features", "http"): ("p99", 2.0),
    ("100 entities x 6 features", "http"): ("p99", 10.0),
    ("1 entity x 6 features", "in-process"): ("p99", 0.3),
}
THROUGHPUT_TARGET = ("wrk c=32, 1 entity x 6 features", 3000.0)

FEATURES_PY = '''
"""Benchmark repo: drivers with two small views and one wide view."""

from featurestore import BatchSource, Entity, FeatureService, FeatureView, Field

driver = Entity(name="driver", join_keys={"driver_id": "int64"})


def view(name, ttl, fields):
    source = BatchSource(
        name=f"{name}_source",
        path=f"data/{name}.parquet",
        timestamp_field="event_ts",
        created_timestamp_field="created_ts",
    )
    return FeatureView(
        name=name,
        entities=[driver],
        source=source,
        ttl=ttl,
        fields=[Field(name=n, dtype=d) for n, d in fields.items()],
    )


stats = {"conv_rate": "float64", "acc_rate": "float32", "avg_daily_trips": "int64"}
driver_stats = view("driver_stats", "2d", stats)
driver_trips = view(
    "driver_trips", "7d", {"trips_today": "int32", "rating": "float64", "earnings": "float64"}
)
driver_wide = view("driver_wide", "7d", {f"f{i:02d}": "float64" for i in range(50)})

ranking = FeatureService(name="ranking", features=[driver_stats, driver_trips])
wide = FeatureService(name="wide", features=[driver_wide])
'''


# -- processes -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {timeout:.0f}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def redis_server(workdir: Path) -> Iterator[tuple[int, int]]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH (apt-get install redis-server)")
    port = free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [binary, *args, "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, 10)
        yield port, proc.pid
    finally:
        stop(proc)


@contextmanager
def feature_server(repo: Path, workers: int, log: Path) -> Iterator[tuple[int, list[int]]]:
    port = free_port()
    cmd = [sys.executable, "-m", "featurestore.server", "--repo", str(repo)]
    cmd += ["--port", str(port), "--workers", str(workers)]
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    try:
        # wait until every worker answers: /health names the process that did
        pids: set[int] = set()
        deadline = time.monotonic() + 120
        while len(pids) < workers:
            if proc.poll() is not None:
                raise SystemExit(f"server exited:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{len(pids)} of {workers} workers came up in 120 s")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                pids.add(json.loads(conn.getresponse().read())["pid"])
                conn.close()
            except OSError:
                time.sleep(0.1)
        yield port, sorted(pids)
    finally:
        stop(proc)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time used so far by ``pids`` (from /proc; 0 elsewhere)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- the repo --------------------------------------------------------------------------------------
def build_repo(root: Path, redis_port: int, entities: int) -> dict[str, float]:
    from featurestore.api.store import FeatureStore

    root.mkdir(parents=True)
    (root / "featurestore.toml").write_text(
        '[project]\nname = "bench"\n\n[online_store]\n'
        f'url = "redis://127.0.0.1:{redis_port}/0"\n\n[server]\nmax_entities = 1000\n'
    )
    (root / "features.py").write_text(FEATURES_PY.lstrip())
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(SEED)
    now_us = int(time.time() * 1e6)
    ids = np.arange(entities, dtype=np.int64)

    def frame(cols: dict[str, Any]) -> pl.DataFrame:
        event = now_us - rng.integers(60_000_000, 3_600_000_000, entities)
        stamps = {
            "event_ts": pl.Series(event).cast(pl.Datetime("us", "UTC")),
            "created_ts": pl.Series(event + 1_000_000).cast(pl.Datetime("us", "UTC")),
        }
        return pl.DataFrame({"driver_id": ids, **stamps, **cols})

    frame(
        {
            "conv_rate": rng.random(entities),
            "acc_rate": rng.random(entities).astype(np.float32),
            "avg_daily_trips": rng.integers(0, 1000, entities),
        }
    ).write_parquet(data / "driver_stats.parquet")
    frame(
        {
            "trips_today": rng.integers(0, 50, entities).astype(np.int32),
            "rating": rng.random(entities) * 5,
            "earnings": rng.random(entities) * 300,
        }
    ).write_parquet(data / "driver_trips.parquet")
    frame({f"f{i:02d}": rng.random(entities) for i in range(50)}).write_parquet(
        data / "driver_wide.parquet"
    )
    store = FeatureStore(root)
    times = {}
    started = time.perf_counter()
    store.apply()
    store.backfill()
    times["backfill_s"] = time.perf_counter() - started
    started = time.perf_counter()
    reports = store.materialize(end=datetime.now(UTC))
    times["materialize_s"] = time.perf_counter() - started
    written = sum(r.written for r in reports)
    if written != 3 * entities:
        raise SystemExit(f"materialized {written} records, expected {3 * entities}")
    store.close()
    return times


# -- measuring -----------------------------------------------------------------------------------
def percentiles(samples_s: list[float]) -> dict[str, float]:
    arr = np.asarray(samples_s) * 1000
    return {
        "p50": float(np.percentile(arr, 50)),
        "p99": float(np.percentile(arr, 99)),
        "n": len(samples_s),
    }


def id_batches(entities: int, size: int, count: int) -> list[list[int]]:
    rng = random.Random(SEED + size)
    return [[rng.randrange(entities) for _ in range(size)] for _ in range(count)]


def redis_benchmark(port: int, clients: int, requests: int) -> dict[str, float]:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return {}
    cmd = [binary, "-p", str(port), "-t", "get", "-n", str(requests), "-c", str(clients), "--csv"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    rows = [line.replace('"', "").split(",") for line in out.strip().splitlines()]
    head, values = rows[0], next(r for r in rows[1:] if r[0] == "GET")
    doc = dict(zip(head, values, strict=True))
    return {
        "rps": float(doc["rps"]),
        "p50": float(doc["p50_latency_ms"]),
        "p99": float(doc["p99_latency_ms"]),
    }


def latency_case(
    repo: Path,
    redis_port: int,
    server: tuple[int, list[int]],
    case: tuple[int, int, str],
    n: int,
    feast_route: bool = False,
) -> dict[str, dict[str, float]]:
    """One lookup shape measured three ways, interleaved call by call so that all
    three see the same moments of a noisy machine: raw redis-py MGET of exactly the
    keys the lookup reads (the floor), ``FeatureStore.get_online_features``, and an
    HTTP POST on one keep-alive ``http.client`` connection. With ``feast_route``, a
    fourth: the same body POSTed to Feast's ``/get-online-features`` (the request is
    valid in both shapes), on the same connection, right after the native one."""
    import redis

    from featurestore.api.online import build_lookup_plan
    from featurestore.api.store import FeatureStore
    from featurestore.stores.online import ReadRequest
    from featurestore.stores.online.encoding import codec_for

    entities, size, service = case
    port, pids = server
    store = FeatureStore(repo)
    version = store.registry.head()
    plan = build_lookup_plan(
        store.index(version),
        project=store.project,
        registry_version=version,
        feature_service=service,
    )
    batches = id_batches(entities, size, 500)
    keys = []
    for ids in batches:
        row = []
        for view in plan.views:
            codec = codec_for(view.schema)
            for e in codec.entities_for(ReadRequest(view.schema, {"driver_id": ids})):
                assert e is not None
                row.append(codec.key_prefix + e + codec.key_suffix)
        keys.append(row)
    bodies = [
        json.dumps({"entities": {"driver_id": ids}, "feature_service": service}).encode()
        for ids in batches
    ]
    client = redis.Redis(port=redis_port)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json"}
    clock = time.perf_counter
    samples: dict[str, list[float]] = {"mget": [], "in-process": [], "http": []}
    if feast_route:
        samples["feast"] = []
    warmup = max(200, n // 10)
    routes = {"http": LOOKUP, "feast": FEAST_LOOKUP} if feast_route else {"http": LOOKUP}

    def post(path: str, body: bytes) -> float:
        t = clock()
        conn.request("POST", path, body=body, headers=headers)
        answer = conn.getresponse()
        data = answer.read()
        took = clock() - t
        if answer.status != 200:
            raise SystemExit(f"HTTP {answer.status} from {path}: {data[:300]!r}")
        return took

    try:
        for i in range(n + warmup):
            if i == warmup:
                cpu = cpu_seconds(pids)  # the servers do nothing else meanwhile
            b = i % len(batches)
            t0 = clock()
            found = client.execute_command("MGET", *keys[b])
            t1 = clock()
            resp = store.get_online_features({"driver_id": batches[b]}, feature_service=service)
            t2 = clock()
            # the two routes take turns going first, so neither always follows the other
            order = list(routes.items()) if i % 2 == 0 else list(routes.items())[::-1]
            took = {way: post(path, bodies[b]) for way, path in order}
            if i >= warmup:
                samples["mget"].append(t1 - t0)
                samples["in-process"].append(t2 - t1)
                for way, seconds in took.items():
                    samples[way].append(seconds)
            assert all(v is not None for v in found)
            assert next(iter(resp.statuses.values()))[0] == "PRESENT"
    finally:
        conn.close()
        store.close()
    out = {k: percentiles(v) for k, v in samples.items()}
    # with the Feast route on, the servers' CPU covers both routes' requests
    out["http"]["server_cpu_us"] = (cpu_seconds(pids) - cpu) / n * 1e6 / (2 if feast_route else 1)
    out["mget"]["keys"] = len(keys[0])
    return out


WRK_SCRIPT = """
local n = tonumber(os.getenv("FS_ENTITIES"))
local keys = tonumber(os.getenv("FS_KEYS"))
local service = os.getenv("FS_SERVICE")
local headers = {["Content-Type"] = "application/json"}
math.randomseed(os.time())
request = function()
  local ids = {}
  for i = 1, n do ids[i] = math.random(0, keys - 1) end
  local body = '{"entities":{"driver_id":[' .. table.concat(ids, ",") ..
    ']},"feature_service":"' .. service .. '"}'
  return wrk.format("POST", "/v1/features/online", headers, body)
end
"""


def wrk(
    port: int,
    pids: dict[str, list[int]],
    load: tuple[int, int, str],
    conns: int,
    seconds: int,
    script: Path,
) -> dict[str, Any]:
    """Requests/s and latency from wrk, and the CPU that each request cost the
    server, Redis and wrk itself: on a shared machine the CPU per request is the
    steadier figure, and 2 cores / (its sum) is what an idle machine would give."""
    binary = shutil.which("wrk")
    if binary is None:
        return {}
    entities, size, service = load
    threads = min(conns, 2)
    cmd = [binary, f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", str(script)]
    env = {**os.environ, "FS_ENTITIES": str(size), "FS_KEYS": str(entities), "FS_SERVICE": service}
    before = {k: cpu_seconds(v) for k, v in pids.items()}
    wrk_before = children_cpu_seconds()
    out = subprocess.run(
        [*cmd, f"http://127.0.0.1:{port}{LOOKUP}"],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        env=env,
        check=True,
    ).stdout
    used = {k: cpu_seconds(v) - before[k] for k, v in pids.items()}
    used["wrk"] = children_cpu_seconds() - wrk_before
    done = re.search(r"(\d+) requests in", out)
    requests = int(done.group(1)) if done else 0
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result: dict[str, Any] = {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50": _wrk_ms(out, "50%"),
        "p99": _wrk_ms(out, "99%"),
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }
    if requests:
        per = {k: v / requests * 1e6 for k, v in used.items()}
        result["cpu_us"] = per
        result["idle_rps"] = (os.cpu_count() or 1) * 1e6 / sum(per.values())
    return result


def _wrk_ms(out: str, label: str) -> float:
    match = re.search(rf"^\s+{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


# -- report --------------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    cpu = cpu_model()
    return {
        "cpu": cpu,
        "nproc": str(os.cpu_count()),
        "python": platform.python_version(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def report(res: dict[str, Any]) -> str:
    lines = [
        "| lookup | served by | p50 ms | p99 ms | p50 / floor p50 | p99 / floor p99 "
        "| server CPU us/request | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res["floors"].items():
        if r:
            lines.append(f"| GET | {name} | {r['p50']:.3f} | {r['p99']:.3f} | - | - | - | - |")
    for shape, ways in res["latency"].items():
        floor = ways["mget"]
        for way, r in ways.items():
            if way == "mget":
                label = f"redis-py MGET of {r['keys']:.0f} key{'s' if r['keys'] != 1 else ''}"
            else:
                label = {"http": "HTTP c=1", "feast": "HTTP c=1, Feast route"}.get(way, way)
            ratios = ["-", "-"]
            if way != "mget":
                ratios = [f"{r['p50'] / floor['p50']:.1f}x", f"{r['p99'] / floor['p99']:.1f}x"]
            cpu = f"{r['server_cpu_us']:.0f}" if "server_cpu_us" in r else "-"
            target = TARGETS.get((shape, way))
            mark = "-"
            if target:
                ok = r[target[0]] <= target[1]
                mark = f"{target[0]} <= {target[1]:g}: {'met' if ok else 'MISSED'}"
            if way == "feast":
                over = r["p50"] / ways["http"]["p50"] - 1
                p99 = r["p99"] / ways["http"]["p99"] - 1
                ok = over <= FEAST_ROUTE_TARGET
                mark = (
                    f"p50 {over:+.1%}, p99 {p99:+.1%} vs native; p50 within "
                    f"{FEAST_ROUTE_TARGET:.0%}: {'met' if ok else 'MISSED'}"
                )
            lines.append(
                f"| {shape} | {label} | {r['p50']:.3f} | {r['p99']:.3f} | {ratios[0]} "
                f"| {ratios[1]} | {cpu} | {mark} |"
            )
    lines += [
        "",
        "| throughput | requests/s | p50 ms | p99 ms | / redis-benchmark c=32 "
        "| CPU us/request: server + Redis + wrk | 2 cores / CPU per request | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    floor_rps = res["throughput"].get("redis-benchmark GET c=32", {}).get("rps")
    for name, r in res["throughput"].items():
        if not r:
            continue
        ratio = f"{r['rps'] / floor_rps:.2f}" if floor_rps and "wrk" in name else "-"
        mark = "-"
        if name == THROUGHPUT_TARGET[0]:
            ok = r["rps"] >= THROUGHPUT_TARGET[1]
            mark = f">= {THROUGHPUT_TARGET[1]:g}: {'met' if ok else 'MISSED'}"
        bad = f" ({r['non_2xx']} non-2xx!)" if r.get("non_2xx") else ""
        cpu = r.get("cpu_us")
        split = f"{cpu['server']:.0f} + {cpu['redis']:.0f} + {cpu['wrk']:.0f}" if cpu else "-"
        idle = f"{r['idle_rps']:.0f}" if "idle_rps" in r else "-"
        lines.append(
            f"| {name} | {r['rps']:.0f}{bad} | {r['p50']:.2f} | {r['p99']:.2f} | {ratio} "
            f"| {split} | {idle} | {mark} |"
        )
    return "\n".join(lines) + "\n"


def write_results(text: str, path: Path = RESULTS) -> None:
    """Append ``text`` at the end of this benchmark's section (created if missing)."""
    append_section(SECTION, text, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2000, help="timed calls per latency case")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--write-results", action="store_true", help=f"append to {RESULTS}")
    parser.add_argument("--results-file", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--feast-route",
        action="store_true",
        help=f"also time {FEAST_LOOKUP} (Feast's shape) next to the native route",
    )
    args = parser.parse_args()
    os.environ.setdefault(
        "NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), "featurestore-numba")
    )
    info = machine()
    print(f"{info['nproc']} cores, {info['cpu']}, Python {info['python']}, load {info['load']}")
    n, ents = args.requests, args.entities
    res: dict[str, Any] = {"floors": {}, "latency": {}, "throughput": {}}
    lat, thr = res["latency"], res["throughput"]
    with tempfile.TemporaryDirectory(prefix="fs-online-bench-") as tmp:
        work = Path(tmp)
        (work / "redis").mkdir()
        with redis_server(work / "redis") as (redis_port, redis_pid):
            repo = work / "repo"
            print(f"building the repo: {ents:,} entities x 3 views -> Redis ...", flush=True)
            times = build_repo(repo, redis_port, ents)
            print(
                f"  backfill {times['backfill_s']:.1f}s, materialize {times['materialize_s']:.1f}s"
            )
            res["floors"]["redis-benchmark c=1"] = redis_benchmark(redis_port, 1, 20_000)
            thr["redis-benchmark GET c=32"] = redis_benchmark(redis_port, 32, 200_000)
            script = work / "post.lua"
            script.write_text(WRK_SCRIPT)
            with feature_server(repo, args.workers, work / "server.log") as (port, workers):
                for size, service, feats in (
                    (1, "ranking", 6),
                    (100, "ranking", 6),
                    (1, "wide", 50),
                    (100, "wide", 50),
                ):
                    word = "entity" if size == 1 else "entities"
                    shape = f"{size} {word} x {feats} features"
                    ways = latency_case(
                        repo,
                        redis_port,
                        (port, workers),
                        (ents, size, service),
                        n,
                        feast_route=args.feast_route,
                    )
                    lat[shape] = ways
                    print(
                        f"  {shape}: p50/p99 ms: "
                        + ", ".join(f"{w} {r['p50']:.3f}/{r['p99']:.3f}" for w, r in ways.items()),
                        flush=True,
                    )
                for size in (1, 100):
                    for conns in (8, 32):
                        word = "entity" if size == 1 else "entities"
                        name = f"wrk c={conns}, {size} {word} x 6 features"
                        thr[name] = wrk(
                            port,
                            {"server": workers, "redis": [redis_pid]},
                            (ents, size, "ranking"),
                            conns,
                            args.duration,
                            script,
                        )
                        print(f"  {name}: {thr[name].get('rps', 0):.0f} requests/s", flush=True)
    info["load after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    table = report(res)
    print()
    print(table)
    if args.write_results:
        command = "python benchmarks/online.py " + " ".join(sys.argv[1:])
        text = (
            f"### {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
            f"`{command.strip()}`: {ents:,} entities, {args.workers} server workers, "
            f"{n} timed requests per latency case, {args.duration} s per wrk run. "
            f"Machine: {info['nproc']} cores, {info['cpu']}, Python {info['python']}; "
            f"load average {info['load']} before and {info['load after']} after "
            "(a shared machine: other work shows in the p99s and in the CPU per request).\n\n"
        )
        write_results(text + table, args.results_file)
        print(f"results written to {args.results_file}")


if __name__ == "__main__":
    main()
