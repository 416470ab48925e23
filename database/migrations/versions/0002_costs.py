"""cost in dollars: usage and cost per job and per lot, the daily cost ledger

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def _counter(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), nullable=False, server_default='0')


def _dollars(name: str) -> sa.Column:
    return sa.Column(name, sa.Float(), nullable=False, server_default='0')


def upgrade() -> None:
    with op.batch_alter_table('batch_jobs') as batch:
        batch.add_column(_counter('cached_input_tokens'))
        batch.add_column(_counter('reasoning_tokens'))
        batch.add_column(_dollars('cost_usd'))
        batch.add_column(_dollars('estimated_cost_usd'))
    with op.batch_alter_table('batch_lots') as batch:
        batch.add_column(_counter('input_tokens'))
        batch.add_column(_counter('cached_input_tokens'))
        batch.add_column(_counter('output_tokens'))
        batch.add_column(_counter('reasoning_tokens'))
        batch.add_column(_dollars('cost_usd'))
    op.create_table('cost_ledger',
                    sa.Column('day', sa.Date(), nullable=False),
                    sa.Column('mode', sa.String(length=8), nullable=False),
                    sa.Column('cost_usd', sa.Float(), nullable=False, server_default='0'),
                    sa.Column('lots', sa.Integer(), nullable=False, server_default='0'),
                    sa.PrimaryKeyConstraint('day', 'mode'))


def downgrade() -> None:
    op.drop_table('cost_ledger')
    with op.batch_alter_table('batch_lots') as batch:
        for name in ('cost_usd', 'reasoning_tokens', 'output_tokens', 'cached_input_tokens', 'input_tokens'):
            batch.drop_column(name)
    with op.batch_alter_table('batch_jobs') as batch:
        for name in ('estimated_cost_usd', 'cost_usd', 'reasoning_tokens', 'cached_input_tokens'):
            batch.drop_column(name)
