"""crm records

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 03:00:00

Customers, contacts, contracts with line items and a payment plan, payments and tickets, and the
links between records and the process instances that acted on them (engine/records.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

TABLES = (  # dependents first
    'crm_ticket',
    'crm_record_link',
    'crm_payment',
    'crm_instalment',
    'crm_contract_item',
    'crm_contract',
    'crm_contact',
    'crm_customer',
)


def upgrade() -> None:
    op.create_table('crm_customer',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('industry', sa.String(length=100), nullable=True),
    sa.Column('phone', sa.String(length=50), nullable=True),
    sa.Column('email', sa.String(length=255), nullable=True),
    sa.Column('address', sa.String(length=500), nullable=True),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.Column('owner', sa.String(length=150), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('department_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['department_id'], ['department.id'], name=op.f('fk_crm_customer_department_id_department'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_crm_customer'))
    )
    with op.batch_alter_table('crm_customer', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_crm_customer_department_id'), ['department_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_crm_customer_name'), ['name'], unique=False)
        batch_op.create_index(batch_op.f('ix_crm_customer_owner'), ['owner'], unique=False)

    op.create_table('crm_contact',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('title', sa.String(length=100), nullable=True),
    sa.Column('phone', sa.String(length=50), nullable=True),
    sa.Column('email', sa.String(length=255), nullable=True),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.Column('owner', sa.String(length=150), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('department_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['crm_customer.id'], name=op.f('fk_crm_contact_customer_id_crm_customer'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['department_id'], ['department.id'], name=op.f('fk_crm_contact_department_id_department'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_crm_contact'))
    )
    with op.batch_alter_table('crm_contact', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_crm_contact_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_crm_contact_department_id'), ['department_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_crm_contact_owner'), ['owner'], unique=False)

    op.create_table('crm_contract',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.String(length=50), nullable=True),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('amount', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('signed_on', sa.Date(), nullable=True),
    sa.Column('reject_reason', sa.Text(), nullable=True),
    sa.Column('decided_by', sa.String(length=150), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('owner', sa.String(length=150), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('department_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['crm_customer.id'], name=op.f('fk_crm_contract_customer_id_crm_customer')),
    sa.ForeignKeyConstraint(['department_id'], ['department.id'], name=op.f('fk_crm_contract_department_id_department'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_crm_contract')),
    sa.UniqueConstraint('number', name=op.f('uq_crm_contract_number'))
    )
    with op.batch_alter_table('crm_contract', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_crm_contract_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_crm_contract_department_id'), ['department_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_crm_contract_owner'), ['owner'], unique=False)
        batch_op.create_index(batch_op.f('ix_crm_contract_status'), ['status'], unique=False)

    op.create_table('crm_contract_item',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('contract_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('product', sa.String(length=200), nullable=False),
    sa.Column('description', sa.String(length=500), nullable=True),
    sa.Column('quantity', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('unit_price', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('amount', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.ForeignKeyConstraint(['contract_id'], ['crm_contract.id'], name=op.f('fk_crm_contract_item_contract_id_crm_contract'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_crm_contract_item'))
    )
    with op.batch_alter_table('crm_contract_item', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_crm_contract_item_contract_id'), ['contract_id'], unique=False)

    op.create_table('crm_instalment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('contract_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('due_on', sa.Date(), nullable=False),
    sa.Column('amount', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('note', sa.String(length=500), nullable=True),
    sa.ForeignKeyConstraint(['contract_id'], ['crm_contract.id'], name=op.f('fk_crm_instalment_contract_id_crm_contract'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_crm_instalment'))
    )
    with op.batch_alter_table('crm_instalment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_crm_instalment_contract_id'), ['contract_id'], unique=False)

    op.create_table('crm_payment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('contract_id', sa.Integer(), nullable=False),
    sa.Column('amount', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('received_on', sa.Date(), nullable=False),
    sa.Column('method', sa.String(length=50), nullable=True),
    sa.Column('reference', sa.String(length=100), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('review_note', sa.Text(), nullable=True),
    sa.Column('reviewed_by', sa.String(length=150), nullable=True),
    sa.Column('reviewed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('owner', sa.String(length=150), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('department_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['contract_id'], ['crm_contract.id'], name=op.f('fk_crm_payment_contract_id_crm_contract')),
    sa.ForeignKeyConstraint(['department_id'], ['department.id'], name=op.f('fk_crm_payment_department_id_department'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_crm_payment'))
    )
    with op.batch_alter_table('crm_payment', schema=None) as batch_op:
        batch_op.create_index('ix_crm_payment_contract_status', ['contract_id', 'status'], unique=False)
        batch_op.create_index(batch_op.f('ix_crm_payment_department_id'), ['department_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_crm_payment_owner'), ['owner'], unique=False)
        batch_op.create_index(batch_op.f('ix_crm_payment_status'), ['status'], unique=False)

    op.create_table('crm_record_link',
    sa.Column('record_type', sa.String(length=20), nullable=False),
    sa.Column('record_id', sa.Integer(), nullable=False),
    sa.Column('instance_id', sa.String(length=36), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['process_instance.id'], name=op.f('fk_crm_record_link_instance_id_process_instance'), ondelete='CASCADE', initially='DEFERRED', deferrable=True),
    sa.PrimaryKeyConstraint('record_type', 'record_id', 'instance_id', name=op.f('pk_crm_record_link'))
    )
    with op.batch_alter_table('crm_record_link', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_crm_record_link_instance_id'), ['instance_id'], unique=False)

    op.create_table('crm_ticket',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=True),
    sa.Column('contact_id', sa.Integer(), nullable=True),
    sa.Column('type', sa.String(length=20), nullable=False),
    sa.Column('priority', sa.String(length=10), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('subject', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('assignee', sa.String(length=150), nullable=True),
    sa.Column('vendor', sa.String(length=200), nullable=True),
    sa.Column('rating', sa.Integer(), nullable=True),
    sa.Column('resolution', sa.Text(), nullable=True),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('owner', sa.String(length=150), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('department_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['contact_id'], ['crm_contact.id'], name=op.f('fk_crm_ticket_contact_id_crm_contact'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['customer_id'], ['crm_customer.id'], name=op.f('fk_crm_ticket_customer_id_crm_customer')),
    sa.ForeignKeyConstraint(['department_id'], ['department.id'], name=op.f('fk_crm_ticket_department_id_department'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_crm_ticket'))
    )
    with op.batch_alter_table('crm_ticket', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_crm_ticket_assignee'), ['assignee'], unique=False)
        batch_op.create_index(batch_op.f('ix_crm_ticket_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_crm_ticket_department_id'), ['department_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_crm_ticket_owner'), ['owner'], unique=False)
        batch_op.create_index(batch_op.f('ix_crm_ticket_status'), ['status'], unique=False)


def downgrade() -> None:
    for table in TABLES:
        op.drop_table(table)  # its indexes go with it
