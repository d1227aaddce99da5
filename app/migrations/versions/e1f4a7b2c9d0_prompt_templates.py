"""versioned prompt templates; the version and variables a job's system prompt came from

Revision ID: e1f4a7b2c9d0
Revises: d5e8a1c3b6f2
Create Date: 2026-11-26 00:50:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e1f4a7b2c9d0'
down_revision = 'd5e8a1c3b6f2'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('prompt_templates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('user_id', 'name', 'version', name='uq_prompt_templates_user_name_version')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('prompt_template_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('prompt_variables', sa.JSON(), nullable=True))
        batch_op.create_foreign_key('fk_jobs_prompt_template_id_prompt_templates', 'prompt_templates',
                                    ['prompt_template_id'], ['id'], ondelete='SET NULL')


def downgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_jobs_prompt_template_id_prompt_templates', type_='foreignkey')
        batch_op.drop_column('prompt_variables')
        batch_op.drop_column('prompt_template_id')
    op.drop_table('prompt_templates')
