"""Online store throughput and latency against a private redis-server, next to its floors.

Writes: ``--rows`` entities (default 1M) x 6 features (int64 key; 3 float64, 2 int64,
1 string) through ``RedisOnlineStore.write``: fresh keys without a TTL, then the
same rows one microsecond newer (every key exists: the CAS replaces them all), then
those again (all stale: nothing is stored), then fresh keys with a TTL and the
same one microsecond newer.

The two TTL writes take different paths. New keys go out as one
``SET key value PXAT <ms> NX`` per key (value and deadline in one atomic command,
pipelined, a chunk packed and its replies read in bulk); a key that exists answers
nil and only those rows go through the compare-and-set script. Existing keys go
through the script: MGET, compare, MSET, then one PEXPIREAT per key, each command
in the script costing Redis about 2 us. Redis 7.0 has no multi-key command that
sets deadlines, so both pay one command per key on the server: about 2-2.5 us per
new key (against 0.8-0.9 us per key for the MSETNX of a view without TTL) and about
3 us per existing one. The TTL rates are printed as a share of the SET floor, next
to what redis-benchmark itself gets for the same per-key command on new keys.

Floors, in the same run on the same server, before and after:

- ``redis-benchmark -P 64 -t set -n 1000000 -q`` (C client, one key overwritten,
  3-byte values): the floor the ratios are given against;
- the same with ``-r <rows> -d <our value size>``: random keys (mostly new) with
  values our size, close to what Redis itself pays for a fresh write's inserts;
- ``redis-benchmark -P 64`` of ``SET key:__rand_int__ <value our size> PXAT <ms> NX``
  on new keys: the C client's rate for the command a fresh TTL write sends per key;
- raw redis-py ``MSET`` of our pre-encoded keys and values, 1000 keys per command,
  ten commands per pipeline: the cost of moving the same bytes, with no CAS.

Reads: ``RedisOnlineStore.read`` of 1 and 100 entities x 2 views (3 features each),
p50/p99 over ``--reads`` calls, next to raw redis-py ``MGET`` of the same keys.

Each write also reports client and redis-server CPU microseconds per row, and the
rate those allow when each side has a core ("CPU-bound"): on a shared, noisy
machine wall-clock rates swing by tens of percent, CPU per row much less.

The server is started on a free port and killed (by its PID) at the end.

    python benchmarks/online_store.py
    python benchmarks/online_store.py --rows 200000 --reads 1000
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import numpy as np
import redis

from featurestore.stores.online import OnlineViewSchema, ReadRequest, WriteBatch
from featurestore.stores.online.encoding import codec_for
from featurestore.stores.online.redis import RedisOnlineStore
from featurestore.stores.online.writes import prepare

FEATURES = {
    "f1": "float64",
    "f2": "float64",
    "f3": "float64",
    "n1": "int64",
    "n2": "int64",
    "s": "string",
}
DAY_US = 86_400_000_000
NOW_US = int(time.time() * 1e6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(port=port)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            yield port
        finally:
            proc.kill()
            proc.wait(timeout=10)


def make_batch(rows: int, *, offset: int = 0, bump: int = 0) -> WriteBatch:
    rng = np.random.default_rng(7)
    ids = np.arange(offset, offset + rows, dtype=np.int64)
    # an hour ago and recent enough for the TTL view to keep; ``bump`` makes them newer
    ev = np.full(rows, NOW_US - 3_600_000_000, dtype=np.int64) + ids + bump
    return WriteBatch(
        keys={"id": ids},
        event_ts=ev,
        created_ts=ev,
        features={
            "f1": rng.random(rows),
            "f2": rng.random(rows),
            "f3": rng.random(rows),
            "n1": rng.integers(0, 1 << 40, rows),
            "n2": ids * 3,
            "s": [f"user-{i:08d}" for i in range(offset, offset + rows)],
        },
    )


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def server_cpu(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def measured(client: redis.Redis, fn: Callable[[], Any]) -> tuple[float, float, float, Any]:
    """Wall seconds, client CPU seconds, redis-server CPU seconds, and the result.

    The CPU figures say which side is the bottleneck, and stay meaningful on a
    noisy shared machine where wall time swings by tens of percent."""
    cpu0, srv0 = time.process_time(), server_cpu(client)
    wall, out = timed(fn)
    return wall, time.process_time() - cpu0, server_cpu(client) - srv0, out


def redis_benchmark(port: int, *extra: str, command: tuple[str, ...] = ()) -> tuple[float, float]:
    """Requests/s of 1M SETs (``-t set``, or ``command`` when given) and the client's
    CPU seconds for them."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [
            "redis-benchmark",
            "-P",
            "64",
            *(("-t", "set") if not command else ()),
            "-n",
            "1000000",
            "-p",
            str(port),
            "-q",
            *extra,
            *command,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    rates = re.findall(r"([\d.]+) requests per second", out)
    return float(rates[-1]), cpu


def raw_mset(client: redis.Redis, keys: list[bytes], values: list[bytes]) -> None:
    pipe = client.pipeline(transaction=False)
    for i, start in enumerate(range(0, len(keys), 1000)):
        pipe.mset(dict(zip(keys[start : start + 1000], values[start : start + 1000], strict=True)))
        if i % 10 == 9:
            pipe.execute()
    pipe.execute()


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2] * 1e3, ordered[int(len(ordered) * 0.99)] * 1e3


def time_pair(
    ours: Callable[[], Any], floor: Callable[[], Any], calls: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """p50/p99 in ms of both, calls interleaved so that noise hits them alike."""
    for _ in range(min(200, calls)):
        ours()
        floor()
    a, b = [], []
    for _ in range(calls):
        started = time.perf_counter()
        ours()
        middle = time.perf_counter()
        floor()
        a.append(middle - started)
        b.append(time.perf_counter() - middle)
    return percentiles(a), percentiles(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reads", type=int, default=3000)
    args = parser.parse_args()
    n = args.rows
    plain = OnlineViewSchema.build(
        project="bench", view="plain", keys={"id": "int64"}, features=FEATURES
    )
    with_ttl = OnlineViewSchema.build(
        project="bench", view="ttl", keys={"id": "int64"}, features=FEATURES, ttl_us=DAY_US
    )
    batch = make_batch(n)
    newer = make_batch(n, bump=1)
    codec = codec_for(plain)
    t_encode, (keys, values) = timed(
        lambda: prepare(codec, batch, now_us=0).records(
            prefix=codec.key_prefix, suffix=codec.key_suffix
        )
    )
    rows: list[tuple[str, float, str]] = []

    with redis_server() as port:
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis(port=port)
        store = RedisOnlineStore(url, timeout_s=5.0)

        # (label, rows, wall s, client CPU s, server CPU s)
        runs: list[tuple[str, int, float, float, float]] = []

        def floors(when: str) -> None:
            client.flushall()
            srv0 = server_cpu(client)
            rate, cpu = redis_benchmark(port)
            srv = server_cpu(client) - srv0
            runs.append((f"redis-benchmark -P 64 SET ({when})", 1_000_000, 1e6 / rate, cpu, srv))
            # the same command on random (mostly new) keys with values our size: close
            # to what Redis itself pays for a fresh write's inserts (not the brief's floor)
            client.flushall()
            srv0 = server_cpu(client)
            size = str(len(values[0]))
            rate, cpu = redis_benchmark(port, "-r", str(n), "-d", size)
            srv = server_cpu(client) - srv0
            runs.append(
                (f"  same, -r keys, {size}-byte values ({when})", 1_000_000, 1e6 / rate, cpu, srv)
            )
            # the per-key command of a fresh TTL write, from the C client, on new keys
            client.flushall()
            srv0 = server_cpu(client)
            pxat = str((NOW_US + DAY_US) // 1000)
            set_nx = ("SET", "key:__rand_int__", "x" * int(size), "PXAT", pxat, "NX")
            rate, cpu = redis_benchmark(port, "-r", "1000000000", command=set_nx)
            srv = server_cpu(client) - srv0
            runs.append(
                (f"  SET .. PXAT .. NX, new keys ({when})", 1_000_000, 1e6 / rate, cpu, srv)
            )
            client.flushall()
            wall, cpu, srv, _ = measured(client, partial(raw_mset, client, keys, values))
            runs.append((f"raw redis-py MSET, pre-encoded ({when})", n, wall, cpu, srv))
            client.flushall()

        floors("before")
        scenarios = [
            ("fresh keys, no TTL", plain, batch, "written"),
            ("all keys exist, all newer", plain, newer, "written"),
            ("all keys exist, all stale", plain, newer, "skipped_stale"),
            ("fresh keys, TTL", with_ttl, batch, "written"),
            ("TTL, all keys exist, all newer", with_ttl, newer, "written"),
        ]
        for label, schema, rows_in, expect in scenarios:
            wall, cpu, srv, stats = measured(client, partial(store.write, schema, rows_in))
            assert getattr(stats, expect) == n, (label, stats)
            runs.append((f"ours: {label}", n, wall, cpu, srv))
        floors("after")

        def bound(rows: int, cpu: float, srv: float) -> float:
            # rows/s if client and server each had a core: the busier side sets the pace
            return rows / max(cpu, srv)

        floor = [r for r in runs if r[0].startswith("redis-benchmark")]  # the brief's floor
        set_wall = sum(r[1] / r[2] for r in floor) / len(floor)
        set_bound = sum(bound(r[1], r[3], r[4]) for r in floor) / len(floor)
        print(f"\nwrites of {n:,} entities x 6 features (encoding alone: {n / t_encode:,.0f}/s)")
        print(
            f"  {'':44} {'rows/s':>9} {'vs SET':>7} {'client':>7} {'server':>7}"
            f" {'CPU-bound':>10} {'vs SET':>7}"
        )
        print(f"  {'':44} {'(wall)':>9} {'':>7} {'us/row':>7} {'us/row':>7} {'rows/s':>10}")
        for label, rows_n, wall, cpu, srv in runs:
            rate, cap = rows_n / wall, bound(rows_n, cpu, srv)
            print(
                f"  {label:44} {rate:>9,.0f} {rate / set_wall:>7.0%} {cpu / rows_n * 1e6:>7.2f}"
                f" {srv / rows_n * 1e6:>7.2f} {cap:>10,.0f} {cap / set_bound:>7.0%}"
            )
            if label.startswith("ours"):
                rows.append(
                    (
                        f"write, {label[6:]}",
                        rate,
                        f"{rate / set_wall:.0%} (CPU-bound {cap / set_bound:.0%})",
                    )
                )

        shares = {label: rate for label, rate, _ in rows}
        pxat_rates = [r[1] / r[2] for r in runs if "PXAT" in r[0]]
        print(
            "\nTTL writes vs redis-benchmark -P 64 SET in this run: new keys "
            f"{shares['write, fresh keys, TTL'] / set_wall:.0%}, existing keys "
            f"{shares['write, TTL, all keys exist, all newer'] / set_wall:.0%} "
            f"(redis-benchmark's own SET .. PXAT .. NX of new keys: "
            f"{sum(pxat_rates) / len(pxat_rates) / set_wall:.0%})"
        )

        # reads: the plain and TTL views both hold every entity
        client.flushall()
        store.write(plain, batch)
        store.write(with_ttl, batch)
        print(f"\nreads, 2 views x 3 features, {args.reads} calls (ms)")
        for count in (1, 100):
            ids = list(range(0, count * 37, 37))
            requests = [
                ReadRequest(plain, {"id": ids}, features=["f1", "n1", "s"]),
                ReadRequest(with_ttl, {"id": ids}, features=["f2", "n2", "f3"]),
            ]
            got = store.read(requests)
            assert all(e is not None for r in got for e in r.event_ts)
            mget_keys = [
                codec_for(r.schema).key_prefix
                + b"i"
                + i.to_bytes(8, "big", signed=True)
                + codec_for(r.schema).key_suffix
                for r in requests
                for i in ids
            ]
            ours_p, raw_p = time_pair(
                partial(store.read, requests), partial(client.mget, mget_keys), args.reads
            )
            print(
                f"  {count:>3} entities: ours p50 {ours_p[0]:.3f} p99 {ours_p[1]:.3f} | "
                f"raw MGET p50 {raw_p[0]:.3f} p99 {raw_p[1]:.3f} | "
                f"ratio p50 {ours_p[0] / raw_p[0]:.2f}x"
            )
            rows.append((f"read {count} x 2 views p50 ms", ours_p[0], f"raw MGET {raw_p[0]:.3f}"))
        store.close()

    print("\nmarkdown:")
    print("| measure | ours | vs floor |\n|---|---|---|")
    for label, value, ratio in rows:
        shown = f"{value:,.0f}" if value > 100 else f"{value:.3f}"
        print(f"| {label} | {shown} | {ratio} |")


if __name__ == "__main__":
    main()
