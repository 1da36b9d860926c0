"""A generated card-transactions log with fraud in it, seeded and vectorised.

What makes it look like a real log:

- Skewed keys: card activity is Pareto-distributed (a few cards make many
  transactions) and merchant popularity follows a Zipf law.
- Late events: most events arrive within seconds; 3% arrive minutes to hours late
  (``created_ts`` after ``event_ts``).
- Fraud comes in bursts: a compromised card is tested with a few small amounts,
  then drained with larger ones, within about an hour, mostly at a small set of
  risky merchants. Legitimate shopping sprees make some legitimate bursts too, and
  fraud amounts overlap legitimate ones, so the amount alone is a weak signal.
- Card profiles (credit limit, a bureau risk score weakly tied to compromise) are a
  separate slowly changing table, updated mid-month for some cards.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 30
END = START + timedelta(days=DAYS)
_US = 1_000_000


@dataclass(frozen=True)
class Generated:
    transactions: pl.DataFrame  # card_id, merchant_id, amount, event_ts, created_ts, is_fraud
    cards: pl.DataFrame  # card_id, updated_at, credit_limit, risk_score


def generate(rows: int, *, seed: int = 7, fraud_card_share: float = 0.04) -> Generated:
    """About ``rows`` transactions over 30 days of January 2026."""
    rng = np.random.default_rng(seed)
    n_cards = max(200, rows // 40)
    n_merchants = max(100, rows // 250)
    span_us = DAYS * 86_400 * _US
    start_us = int(START.timestamp() * _US)

    card_weight = rng.pareto(1.6, n_cards) + 0.05
    card_weight /= card_weight.sum()
    merchant_weight = 1.0 / np.arange(1, n_merchants + 1) ** 1.1
    merchant_weight /= merchant_weight.sum()
    card_mu = rng.normal(3.4, 0.6, n_cards)  # log of each card's typical amount
    risky = rng.choice(n_merchants, size=max(5, n_merchants // 20), replace=False)

    compromised = rng.choice(n_cards, size=max(3, int(n_cards * fraud_card_share)), replace=False)
    bursts = rng.poisson(7, compromised.size) + 3
    n_fraud = int(bursts.sum())
    n_spree = max(1, rows // 60)  # legitimate bursts: several buys within an hour
    n_legit = max(0, rows - n_fraud - n_spree)

    # Legitimate transactions: skewed cards and merchants, a daily rhythm.
    card = rng.choice(n_cards, size=n_legit, p=card_weight)
    day = rng.integers(0, DAYS, n_legit)
    hour = rng.normal(14.0, 4.0, n_legit).clip(0, 23.99)
    t = day * 86_400 * _US + (hour * 3_600 * _US).astype(np.int64)
    legit = {
        "card_id": card,
        "merchant_id": rng.choice(n_merchants, size=n_legit, p=merchant_weight),
        "amount": np.exp(rng.normal(card_mu[card], 0.8)),
        "offset_us": t,
    }
    # Sprees: a legitimate card buys a few times within the hour, at busy merchants.
    spree_card = rng.choice(n_cards, size=n_spree, p=card_weight)
    spree_start = rng.integers(0, span_us - 3_600 * _US, n_spree // 4 + 1)
    spree_of = rng.integers(0, spree_start.size, n_spree)
    spree = {
        "card_id": spree_card[spree_of % spree_card.size],
        "merchant_id": rng.choice(n_merchants, size=n_spree, p=merchant_weight),
        "amount": np.exp(rng.normal(3.6, 0.9, n_spree)),
        "offset_us": spree_start[spree_of] + rng.integers(0, 3_600 * _US, n_spree),
    }
    # Fraud: per compromised card, card-testing amounts, then larger ones.
    burst_of = np.repeat(np.arange(compromised.size), bursts)
    position = np.concatenate([np.arange(b) for b in bursts])
    burst_start = rng.integers(0, span_us - 2 * 3_600 * _US, compromised.size)
    gaps = rng.exponential(6 * 60 * _US, n_fraud).astype(np.int64)
    # minutes since the burst's start: the running sum of the gaps within each burst
    running = np.cumsum(gaps)
    before = np.concatenate([[0], running])[np.cumsum(bursts) - bursts]
    within = running - before[burst_of]
    fraud_card = compromised[burst_of]
    testing = position < 2
    fraud = {
        "card_id": fraud_card,
        "merchant_id": np.where(
            rng.random(n_fraud) < 0.6,
            rng.choice(risky, size=n_fraud),
            rng.choice(n_merchants, size=n_fraud, p=merchant_weight),
        ),
        "amount": np.where(
            testing,
            rng.uniform(0.5, 5.0, n_fraud),
            np.exp(rng.normal(card_mu[fraud_card] + 0.7, 0.9)),
        ),
        "offset_us": burst_start[burst_of] + within,
    }

    def frame(part: dict[str, np.ndarray], label: bool) -> pl.DataFrame:
        return pl.DataFrame(part).with_columns(pl.lit(label).alias("is_fraud"))

    events = pl.concat([frame(legit, False), frame(spree, False), frame(fraud, True)])
    n = events.height
    delay = rng.exponential(2 * _US, n).astype(np.int64)
    late = rng.random(n) < 0.03
    delay[late] += rng.exponential(2 * 3_600 * _US, int(late.sum())).astype(np.int64)
    transactions = (
        events.with_columns(
            pl.col("card_id").cast(pl.Int64),
            pl.col("merchant_id").cast(pl.Int64),
            pl.col("amount").round(2).cast(pl.Float64),
            pl.from_epoch(pl.col("offset_us") + start_us, time_unit="us")
            .dt.replace_time_zone("UTC")
            .alias("event_ts"),
        )
        .filter(pl.col("offset_us") < span_us)
        .with_columns(
            (pl.col("event_ts") + pl.Series(delay[: events.height]).cast(pl.Duration("us"))).alias(
                "created_ts"
            )
        )
        .drop("offset_us")
        .sort("event_ts")
        .with_row_index("transaction_id")
        .with_columns(pl.col("transaction_id").cast(pl.Int64))
    )

    # Profiles: one row per card before the month, a credit-limit change for 10% mid-month.
    limit = np.round(np.exp(rng.normal(7.6, 0.5, n_cards)), -2)
    is_compromised = np.zeros(n_cards, dtype=bool)
    is_compromised[compromised] = True
    risk = np.clip(rng.normal(600 - 40 * is_compromised, 80), 300, 850).astype(np.int64)
    first = pl.DataFrame(
        {
            "card_id": np.arange(n_cards, dtype=np.int64),
            "updated_at": [START - timedelta(days=1)] * n_cards,
            "credit_limit": limit,
            "risk_score": risk,
        }
    )
    changed = rng.choice(n_cards, size=n_cards // 10, replace=False)
    second = first[changed.tolist()].with_columns(
        pl.lit(START + timedelta(days=15)).alias("updated_at"),
        ((pl.col("credit_limit") * 1.5) / 100).round() * 100,
    )
    cards = pl.concat([first, second]).with_columns(pl.col("updated_at").dt.cast_time_unit("us"))
    return Generated(transactions=transactions, cards=cards)
