"""A feature view's page and the freshness page.

The definition, lineage, offline table and online settings come from
``api.catalog.describe`` (what ``featurestore describe`` prints). Two things it
leaves out on purpose, because ``describe`` must answer while Redis is down, are
read here, each bounded:

- freshness: the newest online value of a view. The online store has no "newest
  record" query, so this reads the records of the entities of the newest offline
  rows (at most ``PROBE`` of them; the Delta log's stats find those rows without a
  scan of old files). With a stream feeding the view, the stream appends those rows
  to the offline table too, so they are the newest ones either way.
- the chart: one numeric column of the offline table, averaged in ``BUCKETS`` time
  buckets over the last ``CHART_ROWS`` rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from featurestore._time import format_duration_us, from_us, now_us
from featurestore.api.catalog import describe, find, offline_table
from featurestore.errors import FeatureStoreError, RequestError, UnknownFeatureError
from featurestore.ui.access import Visibility
from featurestore.ui.catalog_data import head_plan

if TYPE_CHECKING:
    import polars as pl

    from featurestore.api.store import FeatureStore
    from featurestore.compile.views import FeatureViewPlan

PROBE = 32
BUCKETS = 60
CHART_ROWS = 200_000
CHART_W, CHART_H, PAD = 640, 160, 28
_NUMERIC = ("Int", "UInt", "Float")


def known(store: FeatureStore, vis: Visibility, name: str, *, group: str) -> None:
    """Raise ``UnknownFeatureError`` (a 404) when ``name`` is not registered in
    ``group`` or this key may not see it; the hint names close names, as the CLI does."""
    _, plan = head_plan(store)
    try:
        obj = find(plan, name, group=group)
    except RequestError as exc:
        raise UnknownFeatureError(exc.message, obj=exc.obj, hint=exc.hint) from None
    if not vis.sees(obj.kind, obj.name):
        raise UnknownFeatureError(
            "no registered object has this name",
            obj=f"name {name!r}",
            hint="the catalog lists the objects this API key may see",
        )


def view_page(
    store: FeatureStore, vis: Visibility, name: str, *, feature: str | None = None
) -> dict[str, Any]:
    known(store, vis, name, group="views")
    info = describe(store, name, group="views")
    spec = info["definition"]
    info["lineage"] = {
        k: [x for x in v if vis.sees(*x.split(" ", 1))] for k, v in info["lineage"].items()
    }
    if info["kind"] == "on_demand_feature_view":
        info["transforms"] = [
            {"name": t["name"], "expr": t["expr"]["repr"]}
            for t in spec["transform"].get("exprs", [])
        ]
        return info
    info["source_url"], info["inline_source"] = source_link(store, spec["source"])
    info["ttl"] = "no TTL" if spec["ttl_us"] is None else format_duration_us(spec["ttl_us"])
    info["transforms"] = [{"name": t["name"], "expr": t["expr"]["repr"]} for t in spec["transform"]]
    info["aggregations"] = [
        {
            **a,
            "window": "lifetime" if a["window_us"] is None else format_duration_us(a["window_us"]),
            "hop": "-" if a["hop_us"] is None else format_duration_us(a["hop_us"]),
        }
        for a in spec["aggregations"]
    ]
    view = store.index(info["registry_version"]).view(name)
    info["freshness"] = freshness_of(store, view, offline=info["offline"])
    info["chart"] = chart(store, view, info["offline"], feature=feature)
    return info


def source_link(store: FeatureStore, source: dict[str, Any]) -> tuple[str | None, str | None]:
    """The page of a view's source, or (None, "KIND NAME") for a source defined inline
    in the view: not a registered object, it has no page of its own."""
    kind: Literal["kafka_source", "batch_source"] = (
        "kafka_source" if source["type"] == "kafka" else "batch_source"
    )
    _, plan = head_plan(store)
    if plan.get(kind, source["name"]) is None:
        return None, f"{kind} {source['name']}"
    return f"/ui/objects/{kind}/{source['name']}", None


def _newest_keys(store: FeatureStore, view: FeatureViewPlan, newest: Any) -> pl.DataFrame:
    import polars as pl

    frame = store.offline.read_table(view.name)
    return (
        frame.filter(pl.col("event_ts") >= pl.lit(newest).str.to_datetime(time_zone="UTC"))
        .select(view.join_keys)
        .unique()
        .head(PROBE)
        .collect()
    )


def freshness_of(
    store: FeatureStore, view: FeatureViewPlan, *, offline: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Age of the newest online value against the TTL: ``state`` is ``green`` (under
    half the TTL), ``amber`` (under the TTL), ``red`` (older, or nothing online),
    ``none`` (no TTL: the age is shown, not judged) or ``offline`` (not served)."""
    from featurestore.stores.online.base import ReadRequest
    from featurestore.stores.view_specs import online_schema

    ttl = view.ttl_us
    out: dict[str, Any] = {
        "view": view.name,
        "ttl": "no TTL" if ttl is None else format_duration_us(ttl),
        "newest_online": None,
        "age": None,
        "state": "offline",
        "note": "",
    }
    mark = store.registry.get_watermark(f"materialize:{view.name}")
    out["materialized_until"] = None if mark is None else from_us(mark).isoformat()
    if not view.online:
        out["note"] = "offline only (online=False)"
        return out
    offline = offline if offline is not None else offline_table(store.offline, view.name)
    rng = offline.get("event_time_range")
    if not offline.get("exists") or not rng:
        out.update(state="red", note="no offline rows yet: run `featurestore backfill`")
        return out
    try:
        keys = _newest_keys(store, view, rng[1].replace(" ", "T"))
        served = store.serving_index().view(view.name)
        schema = online_schema(store.project, served, retention=store.settings.online_retention)
        result = store.online.read(
            [ReadRequest(schema, {k: keys[k].to_list() for k in view.join_keys})]
        )[0]
    except (FeatureStoreError, OSError) as exc:
        out.update(state="red", note=f"online store not readable: {exc}")
        return out
    stamps = [t for t in result.event_ts if t is not None]
    if not stamps:
        out.update(state="red", note="nothing online: run `featurestore materialize`")
        return out
    newest = max(stamps)
    age = max(0, now_us() - newest)
    age_shown = format_duration_us(age // 1_000_000 * 1_000_000)  # whole seconds
    out.update(newest_online=from_us(newest).isoformat(), age=age_shown)
    if ttl is None:
        out["state"] = "none"
    else:
        out["state"] = "green" if age <= ttl // 2 else "amber" if age <= ttl else "red"
        out["age_share"] = round(age / ttl, 3)
    return out


def freshness(store: FeatureStore, vis: Visibility) -> dict[str, Any]:
    head, _ = head_plan(store)
    views = store.index(head).views if head else {}
    rows = [freshness_of(store, v) for n, v in sorted(views.items()) if vis.sees_view(n)]
    return {"registry_version": head, "views": rows}


def chart(
    store: FeatureStore, view: FeatureViewPlan, offline: dict[str, Any], *, feature: str | None
) -> dict[str, Any] | None:
    """An SVG polyline of the mean of ``feature`` (default: the first numeric column)
    per time bucket; None when the view has no offline rows or no numeric column."""
    import polars as pl

    if not offline.get("exists"):
        return None
    frame = store.offline.read_table(view.name)
    skip = {"event_ts", "created_ts", *view.join_keys}
    numeric = [
        c
        for c, t in frame.collect_schema().items()
        if str(t).startswith(_NUMERIC) and c not in skip
    ]
    if not numeric:
        return None
    column = feature if feature in numeric else numeric[0]
    rows = (
        frame.select("event_ts", column)
        .drop_nulls()
        .sort("event_ts")
        .tail(CHART_ROWS)
        .select(pl.col("event_ts").dt.epoch("us").alias("t"), pl.col(column).cast(pl.Float64))
        .collect()
    )
    if rows.height == 0:
        return None
    t0, t1 = int(rows["t"].min()), int(rows["t"].max())  # type: ignore[arg-type]
    step = max(1, (t1 - t0) // BUCKETS + 1)
    series = (
        rows.group_by(((pl.col("t") - t0) // step).alias("b"))
        .agg(pl.col(column).mean().alias("v"))
        .sort("b")
    )
    vs = series["v"].to_list()
    lo, hi = min(vs), max(vs)
    span = (hi - lo) or 1.0
    width, height = CHART_W - 2 * PAD, CHART_H - 2 * PAD
    last = max(1, int(series["b"].max()))  # type: ignore[arg-type]
    points = " ".join(
        f"{PAD + b / last * width:.1f},{PAD + (1 - (v - lo) / span) * height:.1f}"
        for b, v in zip(series["b"].to_list(), vs, strict=True)
    )
    return {
        "column": column,
        "columns": numeric,
        "points": points,
        "min": f"{lo:.4g}",
        "max": f"{hi:.4g}",
        "start": from_us(t0).isoformat(timespec="minutes"),
        "end": from_us(t1).isoformat(timespec="minutes"),
        "rows": rows.height,
        "width": CHART_W,
        "height": CHART_H,
        "pad": PAD,
    }
