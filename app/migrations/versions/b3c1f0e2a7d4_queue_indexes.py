"""indexes for the queue's hot queries

Revision ID: b3c1f0e2a7d4
Revises: a9e49125f71c
Create Date: 2026-11-25 23:10:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = 'b3c1f0e2a7d4'
down_revision = 'a9e49125f71c'
branch_labels = None
depends_on = None


def upgrade():
    op.drop_index('ix_jobs_model_status', table_name='jobs')
    op.create_index('ix_jobs_model_status_id', 'jobs', ['model', 'status', 'id'])
    op.create_index('ix_jobs_key_status', 'jobs', ['api_key_id', 'status'])


def downgrade():
    op.drop_index('ix_jobs_key_status', table_name='jobs')
    op.drop_index('ix_jobs_model_status_id', table_name='jobs')
    op.create_index('ix_jobs_model_status', 'jobs', ['model', 'status'])
