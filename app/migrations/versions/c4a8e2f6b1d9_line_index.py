"""a queued job's place, and a key's queued jobs, counted in an index alone

Revision ID: c4a8e2f6b1d9
Revises: b8f3d6a2c4e1
Create Date: 2026-12-07 03:00:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = 'c4a8e2f6b1d9'
down_revision = 'b8f3d6a2c4e1'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index('ix_jobs_line', 'jobs', ['model', 'status', 'held', 'id', 'priority', 'created_at', 'batch_id'])
    op.create_index('ix_jobs_key_status_batch', 'jobs', ['api_key_id', 'status', 'batch_id'])
    op.drop_index('ix_jobs_key_status', table_name='jobs')


def downgrade():
    op.create_index('ix_jobs_key_status', 'jobs', ['api_key_id', 'status'])
    op.drop_index('ix_jobs_key_status_batch', table_name='jobs')
    op.drop_index('ix_jobs_line', table_name='jobs')
