"""What one materialization run of one view did (plain and aggregated views alike).

The lowest module of ``materialize``: ``aggregates`` and ``online`` both build this
report, and ``online`` dispatches to ``aggregates``, so the folder reads top-down.
"""

from __future__ import annotations

from dataclasses import dataclass

from featurestore.compile.views import FeatureViewPlan
from featurestore.config import GLOBAL_KEY, KEEP, OnlineRetention
from featurestore.stores.online.base import WriteStats
from featurestore.stores.view_specs import describe_retention


@dataclass(frozen=True)
class MaterializeReport:
    """Entities found, records written, entities whose stored record was already as
    new (``skipped_stale``) and entities already past the online retention at the
    time of writing (``skipped_expired``: nothing was stored for them).

    ``retention`` describes the view's online retention (``2 x ttl = 2d``) and
    ``retention_key`` says where featurestore.toml sets it; ``hint`` turns both into
    the fix when every entity was past retention (historical data).
    """

    view: str
    start_us: int | None
    end_us: int
    entities: int
    written: int
    skipped_stale: int
    seconds: float
    skipped_expired: int = 0
    retention: str = ""
    retention_key: str = GLOBAL_KEY

    @property
    def rows_per_second(self) -> float:
        return self.entities / self.seconds if self.seconds > 0 else 0.0

    @property
    def all_past_retention(self) -> bool:
        """True when entities were found but every one was past the retention, as
        when materializing last year's data with the default retention."""
        return self.entities > 0 and self.skipped_expired == self.entities

    @property
    def hint(self) -> str | None:
        """One line with the fix when ``all_past_retention``, else None."""
        if not self.all_past_retention:
            return None
        return (
            f"all {self.entities:,} entities are past the online retention "
            f"({self.retention}) at now, so none was written; set "
            f'{self.retention_key} = "{KEEP}" to materialize historical data'
        )


def report_for(
    view: FeatureViewPlan,
    retention: OnlineRetention | None,
    *,
    start_us: int | None,
    end_us: int,
    entities: int = 0,
    stats: WriteStats | None = None,
    seconds: float = 0.0,
) -> MaterializeReport:
    """A report of ``view`` (``stats``: what its online writes did, added up) carrying
    its retention's description and setting key."""
    policy = retention or OnlineRetention()
    stats = stats or WriteStats()
    return MaterializeReport(
        view=view.name,
        start_us=start_us,
        end_us=end_us,
        entities=entities,
        written=stats.written,
        skipped_stale=stats.skipped_stale,
        seconds=seconds,
        skipped_expired=stats.skipped_expired,
        retention=describe_retention(view, policy),
        retention_key=policy.key_for(view.name),
    )
