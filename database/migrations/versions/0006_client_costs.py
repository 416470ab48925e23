"""the cost ledger per client: each client's own daily budget is read from its rows

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Spending recorded before this revision was made with SHARED_KEY: it belongs to the implicit client
``default``. The deployment's total for a day is the sum over its clients' rows.
"""
from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cost_ledger') as batch:
        batch.add_column(sa.Column('client_id', sa.String(length=64), nullable=False, server_default='default'))
        batch.drop_constraint('pk_cost_ledger', type_='primary')
        batch.create_primary_key('pk_cost_ledger', ['day', 'mode', 'client_id'])


def downgrade() -> None:
    # the clients' rows of a day and mode fold back into one
    op.create_table('cost_ledger_total',
                    sa.Column('day', sa.Date(), nullable=False),
                    sa.Column('mode', sa.String(length=8), nullable=False),
                    sa.Column('cost_usd', sa.Float(), nullable=False, server_default='0'),
                    sa.Column('lots', sa.Integer(), nullable=False, server_default='0'),
                    sa.PrimaryKeyConstraint('day', 'mode', name='pk_cost_ledger_total'))
    op.execute('INSERT INTO cost_ledger_total (day, mode, cost_usd, lots) '
               'SELECT day, mode, SUM(cost_usd), SUM(lots) FROM cost_ledger GROUP BY day, mode')
    op.execute('DELETE FROM cost_ledger')
    with op.batch_alter_table('cost_ledger') as batch:
        batch.drop_constraint('pk_cost_ledger', type_='primary')
        batch.drop_column('client_id')
        batch.create_primary_key('pk_cost_ledger', ['day', 'mode'])
    op.execute('INSERT INTO cost_ledger (day, mode, cost_usd, lots) SELECT day, mode, cost_usd, lots '
               'FROM cost_ledger_total')
    op.drop_table('cost_ledger_total')
