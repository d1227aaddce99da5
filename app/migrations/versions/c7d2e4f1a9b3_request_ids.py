"""the request id a job was made by

Revision ID: c7d2e4f1a9b3
Revises: b3c1f0e2a7d4
Create Date: 2026-11-25 23:50:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c7d2e4f1a9b3'
down_revision = 'b3c1f0e2a7d4'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request_id', sa.String(length=64), nullable=True))


def downgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('request_id')
