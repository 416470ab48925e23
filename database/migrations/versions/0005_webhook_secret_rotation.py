"""a client's webhook secret is rotated with a grace period: the previous secret and when it stops signing

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

While the previous secret is kept, every webhook carries a Standard Webhooks signature made with each
secret, so receivers can switch to the new one at their own pace.
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('previous_webhook_secret', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('previous_webhook_secret_expires_at', sa.DateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('previous_webhook_secret_expires_at')
        batch_op.drop_column('previous_webhook_secret')
