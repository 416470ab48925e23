"""a job's lots are accepted as pages of JSON and written out as rows when a worker takes the job up

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

Writing 50,000 rows into batch_lots (four indexes, a foreign key, JSONB) was most of the cost of
accepting a job; a page of lots is one short row. The page text is compressed with lz4 where the
server has it (PostgreSQL 14+ built with it), else with the default. The downgrade writes the rows of
jobs not yet taken up before it drops the pages, so no accepted lot is lost.
"""
from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'batch_lot_pages',
        sa.Column('job_id', sa.String(length=36), nullable=False),
        sa.Column('first_seq', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('lots', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['job_id'], ['batch_jobs.id'], name='fk_batch_lot_pages_job_id_batch_jobs',
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('job_id', 'first_seq', name='pk_batch_lot_pages'),
    )
    connection = op.get_bind()
    if connection.dialect.name == 'postgresql':
        try:
            with connection.begin_nested():
                op.execute("ALTER TABLE batch_lot_pages ALTER COLUMN lots SET COMPRESSION lz4")
        except sa.exc.DBAPIError:
            pass  # a server without lz4 keeps its default compression


def downgrade() -> None:
    from database.lot_pages import expand_all

    expand_all(op.get_bind())
    op.drop_table('batch_lot_pages')
