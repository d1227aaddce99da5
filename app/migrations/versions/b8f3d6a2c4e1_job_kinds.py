"""what a job computes: a chat answer, or embeddings

Revision ID: b8f3d6a2c4e1
Revises: a1c5e9d3f7b2
Create Date: 2026-12-07 10:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b8f3d6a2c4e1'
down_revision = 'a1c5e9d3f7b2'
branch_labels = None
depends_on = None


def upgrade():
    # The server default fills the rows there are (SQLite and PostgreSQL alike add a NOT NULL column so).
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), nullable=False, server_default='chat'))


def downgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('kind')
