"""Order attempts: recorded before inventory sells an order's stock (order/recovery.py settles abandoned ones)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 14:45:26.062985
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('order_attempts',
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('reservation_id', sa.String(length=160), nullable=False),
    sa.Column('user_id', sa.String(length=128), nullable=False),
    sa.Column('abandoned', sa.SmallInteger(), nullable=False),
    sa.Column('create_time', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('request_id')
    )
    with op.batch_alter_table('order_attempts', schema=None) as batch_op:
        batch_op.create_index('order_attempts_by_age', ['create_time'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('order_attempts', schema=None) as batch_op:
        batch_op.drop_index('order_attempts_by_age')

    op.drop_table('order_attempts')
