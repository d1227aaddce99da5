"""the worker's generation time on the job

Revision ID: d5e8a1c3b6f2
Revises: c7d2e4f1a9b3
Create Date: 2026-11-25 23:20:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'd5e8a1c3b6f2'
down_revision = 'c7d2e4f1a9b3'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('duration_ms', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('duration_ms')
