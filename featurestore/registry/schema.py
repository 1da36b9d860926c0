"""Registry tables (SQLAlchemy Core). One set of tables holds many projects."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

versions = sa.Table(
    "fs_registry_versions",
    metadata,
    sa.Column("project", sa.String(200), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("author", sa.String(200), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("operation", sa.String(20), nullable=False),  # apply | rollback
    sa.Column("plan_hash", sa.String(64), nullable=False),
)

objects = sa.Table(
    "fs_registry_objects",
    metadata,
    sa.Column("project", sa.String(200), primary_key=True),
    sa.Column("kind", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("revision", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("registry_version", sa.Integer, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("plan_json", sa.Text, nullable=False),
    sa.Column("removed", sa.Boolean, nullable=False),
    sa.Index("ix_fs_objects_version", "project", "registry_version"),
)

watermarks = sa.Table(
    "fs_registry_watermarks",
    metadata,
    sa.Column("project", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("value_us", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# Blue/green serving: a view listed here is served online from the definition it had
# at ``version`` (its old derivation, whose records exist) until it is promoted.
serving_pins = sa.Table(
    "fs_registry_serving_pins",
    metadata,
    sa.Column("project", sa.String(200), primary_key=True),
    sa.Column("view", sa.String(200), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("pinned_at", sa.DateTime(timezone=True), nullable=False),
)
