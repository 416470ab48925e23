"""webhook deliveries carry their destination host; lots can be leased for their photo checks

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

The dispatcher shares its pool per destination (scheme, host, port) rather than per URL
string; the column lets it group and exclude by host in SQL. Existing rows are filled in
from their URLs. A lot's lease lets any process check a page of a job's photos, and the job
counts the lots past its photo stage for batch-status.
"""
from urllib.parse import urlsplit

from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_PORTS = {"http": 80, "https": 443}


def _destination(url: str) -> str:
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        return f"{scheme}://{(parts.hostname or '').rstrip('.')}:{parts.port or _PORTS.get(scheme, 0)}"
    except ValueError:
        return url[:300]


def upgrade() -> None:
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('destination', sa.String(length=300), nullable=True))
        batch_op.create_index('ix_webhook_deliveries_destination', ['status', 'destination'], unique=False)
    with op.batch_alter_table('batch_lots', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_owner', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('batch_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('images_checked_lots', sa.Integer(), nullable=False, server_default='0'))
    table = sa.table('webhook_deliveries', sa.column('id', sa.Integer), sa.column('webhook_url', sa.Text),
                     sa.column('destination', sa.String))
    connection = op.get_bind()
    rows = connection.execute(sa.select(table.c.id, table.c.webhook_url)).all()
    for row_id, url in rows:
        connection.execute(table.update().where(table.c.id == row_id).values(destination=_destination(url)))


def downgrade() -> None:
    with op.batch_alter_table('batch_jobs', schema=None) as batch_op:
        batch_op.drop_column('images_checked_lots')
    with op.batch_alter_table('batch_lots', schema=None) as batch_op:
        batch_op.drop_column('lease_expires_at')
        batch_op.drop_column('lease_owner')
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_deliveries_destination')
        batch_op.drop_column('destination')
