"""The run store's tables, declared once with SQLAlchemy Core, and the statements the
hot path runs, built once.

flow_versions (the exact flow text a run started with), runs (status, position, lease,
model use), checkpoints (each finished step's output), effects (the effect ledger),
decisions (people's decisions) and events (an append-only audit trail); api_tokens,
users and service_keys are `runner serve`'s (its API tokens, the inbox's accounts and
the key that signs their sessions); runner_meta holds the schema revision for runners
older than Alembic's bookkeeping (alembic_version, declared here as Alembic makes it, so
that a new database is stamped without loading Alembic).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()  # change it only together with a new migration (migrations/)

meta = sa.Table(
    "runner_meta",
    metadata,
    sa.Column("key", sa.String(50), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

flow_versions = sa.Table(
    "flow_versions",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("git_commit", sa.String(64)),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # Where the flow file was (revision 0002): its absolute path, the git repository
    # holding it and its path there. Null when unknown, as for runs of release 0.1.
    sa.Column("abs_path", sa.Text),
    sa.Column("git_root", sa.Text),
    sa.Column("repo_path", sa.Text),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("flow_name", sa.String(200), nullable=False, index=True),
    sa.Column("flow_digest", sa.String(64), sa.ForeignKey("flow_versions.digest"), nullable=False),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("position", sa.String(100), nullable=False),
    sa.Column("failed_step", sa.String(100)),
    sa.Column("reason", sa.Text),
    sa.Column("error", sa.JSON),
    sa.Column("input", sa.JSON, nullable=False),
    sa.Column("steps_run", sa.Integer, nullable=False, default=0),
    sa.Column("llm_calls", sa.Integer, nullable=False, default=0),
    sa.Column("tokens", sa.Integer, nullable=False, default=0),
    sa.Column("cost_usd", sa.Float, nullable=False, default=0.0),
    sa.Column("lease_owner", sa.String(200)),
    sa.Column("lease_expires", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # When a run waiting for review expires (revision 0003); null when it does not.
    sa.Column("due_at", sa.DateTime(timezone=True), index=True),
    # The queue's index and the newest-first listing's (revision 0004).
    sa.Index("ix_runs_queue", "status", "due_at"),
    sa.Index("ix_runs_created_at", "created_at"),
)

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("step_id", sa.String(100), nullable=False),
    sa.Column("outcome", sa.String(40), nullable=False),
    sa.Column("route", sa.String(100), nullable=False),
    sa.Column("output", sa.JSON),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
)

effects = sa.Table(
    "effects",
    metadata,
    sa.Column("key", sa.String(500), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("step_id", sa.String(100), nullable=False),
    sa.Column("tool", sa.String(100), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("result", sa.JSON),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
)

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id"), nullable=False, index=True),
    sa.Column("step_id", sa.String(100)),
    sa.Column("decision", sa.String(20), nullable=False),
    sa.Column("decided_by", sa.String(200), nullable=False),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("content_hash", sa.String(64)),
    sa.Column("note", sa.Text),
    sa.Column("content", sa.JSON),
    # What the person changed, before -> after, and why they approved past a policy
    # (revision 0003).
    sa.Column("diff", sa.JSON),
    sa.Column("override", sa.Text),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("step_id", sa.String(100)),
    sa.Column("data", sa.JSON),
)

api_tokens = sa.Table(  # `runner serve`'s tokens (revision 0004): a hash, never the token
    "api_tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("scopes", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
)

users = sa.Table(  # the review inbox's accounts (revision 0005): a password hash, never one
    "users",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("password_hash", sa.Text),  # null: signs in only through a proxy's header
    sa.Column("role", sa.String(20), nullable=False),  # reviewer or admin
    sa.Column("flows", sa.Text, nullable=False),  # comma-separated; empty: every flow
    sa.Column("groups", sa.Text, nullable=False),  # the reviewer groups it decides for
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("disabled_at", sa.DateTime(timezone=True)),
)

service_keys = sa.Table(  # secrets every `runner serve` on the store shares (revision 0005)
    "service_keys",
    metadata,
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

alembic_version = sa.Table(
    "alembic_version",
    sa.MetaData(),
    sa.Column("version_num", sa.String(32), nullable=False),
    sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


# Statements built once: building them per step costs more than running them.
ADVANCE_RUN = (
    runs.update()
    .where(runs.c.id == sa.bindparam("rid"), runs.c.lease_owner == sa.bindparam("owner"))
    .values(
        status=sa.bindparam("status"),
        position=sa.bindparam("position"),
        updated_at=sa.bindparam("updated_at"),
        failed_step=sa.bindparam("failed_step"),
        reason=sa.bindparam("reason"),
        error=sa.bindparam("error", type_=sa.JSON),
        steps_run=runs.c.steps_run + sa.literal_column("1"),
        lease_owner=sa.bindparam("new_owner"),
        llm_calls=sa.bindparam("llm_calls"),
        tokens=sa.bindparam("tokens"),
        cost_usd=sa.bindparam("cost_usd"),
        lease_expires=sa.bindparam("lease_expires"),
        due_at=sa.bindparam("due_at"),
    )
)
INSERT_RUN = runs.insert()
INSERT_CHECKPOINT = checkpoints.insert()
FINISH_EFFECT = (
    effects.update()
    .where(effects.c.key == sa.bindparam("k"))
    .values(
        status=sa.bindparam("status"),
        result=sa.bindparam("result", type_=sa.JSON),
        finished_at=sa.bindparam("finished_at"),
    )
)
INSERT_EVENTS = events.insert()
