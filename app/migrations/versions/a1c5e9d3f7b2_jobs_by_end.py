"""jobs by when they ended: the Queue page's last hour

Revision ID: a1c5e9d3f7b2
Revises: f2b6c8d4e0a1
Create Date: 2026-12-06 19:00:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = 'a1c5e9d3f7b2'
down_revision = 'f2b6c8d4e0a1'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index('ix_jobs_processed_at', 'jobs', ['processed_at'])


def downgrade():
    op.drop_index('ix_jobs_processed_at', table_name='jobs')
