"""clients of their own: keys, GS2 nonces, idempotent POSTs, and the client each job belongs to

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Jobs accepted before this revision were made with SHARED_KEY: they belong to the implicit client
``default``.
"""
from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'clients',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('reference_scheme', sa.Boolean(), nullable=False),
        sa.Column('webhook_secret', sa.String(length=100), nullable=False),
        sa.Column('rate_limit_sync', sa.String(length=64), nullable=True),
        sa.Column('rate_limit_batch', sa.String(length=64), nullable=True),
        sa.Column('rate_limit_polling', sa.String(length=64), nullable=True),
        sa.Column('max_queued_lots', sa.Integer(), nullable=True),
        sa.Column('max_daily_cost_usd', sa.Float(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name='pk_clients'),
    )
    op.create_table(
        'client_keys',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('client_id', sa.String(length=64), nullable=False),
        sa.Column('secret', sa.String(length=128), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['client_id'], ['clients.id'], name='fk_client_keys_client_id_clients',
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name='pk_client_keys'),
    )
    op.create_index('ix_client_keys_client_id', 'client_keys', ['client_id'], unique=False)
    op.create_table(
        'request_nonces',
        sa.Column('client_id', sa.String(length=64), nullable=False),
        sa.Column('nonce', sa.String(length=128), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('client_id', 'nonce', name='pk_request_nonces'),
    )
    op.create_index('ix_request_nonces_expires_at', 'request_nonces', ['expires_at'], unique=False)
    op.create_table(
        'idempotency_records',
        sa.Column('client_id', sa.String(length=64), nullable=False),
        sa.Column('key', sa.String(length=255), nullable=False),
        sa.Column('fingerprint', sa.String(length=64), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('status_code', sa.Integer(), nullable=True),
        sa.Column('content_type', sa.String(length=100), nullable=True),
        sa.Column('response_body', sa.LargeBinary(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('client_id', 'key', name='pk_idempotency_records'),
    )
    op.create_index('ix_idempotency_records_expires_at', 'idempotency_records', ['expires_at'], unique=False)
    with op.batch_alter_table('batch_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('client_id', sa.String(length=64), nullable=False, server_default='default'))
        batch_op.add_column(sa.Column('idempotency_key', sa.String(length=255), nullable=True))
        batch_op.create_index('ix_batch_jobs_client_created', ['client_id', 'created_at'], unique=False)
        batch_op.create_unique_constraint('uq_batch_jobs_client_idempotency_key', ['client_id', 'idempotency_key'])


def downgrade() -> None:
    with op.batch_alter_table('batch_jobs', schema=None) as batch_op:
        batch_op.drop_constraint('uq_batch_jobs_client_idempotency_key', type_='unique')
        batch_op.drop_index('ix_batch_jobs_client_created')
        batch_op.drop_column('idempotency_key')
        batch_op.drop_column('client_id')
    op.drop_index('ix_idempotency_records_expires_at', table_name='idempotency_records')
    op.drop_table('idempotency_records')
    op.drop_index('ix_request_nonces_expires_at', table_name='request_nonces')
    op.drop_table('request_nonces')
    op.drop_index('ix_client_keys_client_id', table_name='client_keys')
    op.drop_table('client_keys')
    op.drop_table('clients')
