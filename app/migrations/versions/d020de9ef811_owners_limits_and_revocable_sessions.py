"""owners, limits and revocable sessions

Every API key, conversation and job gets an owner: what existed before belongs to the first admin (the user
named "admin", else the oldest user; a password-less "admin" is made when there are rows but no user, and
`make run` then prints a password for it). Conversations get the owner's name for them (`session_id`), unique
per owner.

Revision ID: d020de9ef811
Revises: e80b0d9c874b
Create Date: 2026-11-25 19:18:15.049254

"""
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'd020de9ef811'
down_revision = 'e80b0d9c874b'
branch_labels = None
depends_on = None

users = sa.table('users', sa.column('id', sa.Integer), sa.column('name', sa.String),
                 sa.column('password_hash', sa.String), sa.column('is_admin', sa.Boolean),
                 sa.column('created_at', sa.DateTime))
api_keys = sa.table('api_keys', sa.column('user_id', sa.Integer))
conversations = sa.table('conversations', sa.column('id', sa.String), sa.column('session_id', sa.String),
                         sa.column('user_id', sa.Integer))
jobs = sa.table('jobs', sa.column('user_id', sa.Integer))


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('is_admin', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('disabled', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('session_version', sa.Integer(), nullable=False, server_default='0'))
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('user_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('rate_limit', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('max_queued', sa.Integer(), nullable=True))
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_id', sa.String(length=128), nullable=True))

    op.execute(conversations.update().values(session_id=conversations.c.id))
    owner = _first_admin()
    if owner is not None:
        for table in (api_keys, conversations, jobs):
            op.execute(table.update().where(table.c.user_id.is_(None)).values(user_id=owner))

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.alter_column('user_id', existing_type=sa.Integer(), nullable=False)
        batch_op.create_index(batch_op.f('ix_api_keys_user_id'), ['user_id'], unique=False)
        batch_op.create_foreign_key('fk_api_keys_user_id_users', 'users', ['user_id'], ['id'], ondelete='CASCADE')
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.alter_column('session_id', existing_type=sa.String(length=128), nullable=False)
        batch_op.create_unique_constraint('uq_conversations_user_session', ['user_id', 'session_id'])
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_user_id'), ['user_id'], unique=False)


def _first_admin():
    connection = op.get_bind()
    owner = connection.execute(sa.select(users.c.id).order_by(users.c.name != 'admin', users.c.id).limit(1)).scalar()
    if owner is None:
        orphans = sum(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar()
                      for table in (api_keys, conversations))
        if not orphans:
            return None
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        connection.execute(users.insert().values(name='admin', password_hash='!', is_admin=True, created_at=now))
        owner = connection.execute(sa.select(users.c.id).where(users.c.name == 'admin')).scalar()
    connection.execute(users.update().where(users.c.id == owner).values(is_admin=True))
    return owner


def downgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_user_id'))
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.drop_constraint('uq_conversations_user_session', type_='unique')
        batch_op.drop_column('session_id')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_constraint('fk_api_keys_user_id_users', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_api_keys_user_id'))
        batch_op.drop_column('max_queued')
        batch_op.drop_column('rate_limit')
        batch_op.drop_column('user_id')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('session_version')
        batch_op.drop_column('disabled')
        batch_op.drop_column('is_admin')
