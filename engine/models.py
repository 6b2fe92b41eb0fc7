"""Database tables of the engine.

Plain SQLAlchemy declarative classes: Flask-SQLAlchemy manages them in the web app
(``SQLAlchemy(model_class=Base)``) and the engine uses them through its unit of work, so the
same models serve web requests, scheduler jobs and CLI commands. Alembic owns the schema
(``migrations/``); ``Base.metadata`` is what autogenerate compares against.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    select,
    text,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    column_property,
    declared_attr,
    mapped_column,
    relationship,
)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BigId = BigInteger().with_variant(Integer, "sqlite")  # SQLite only autoincrements INTEGER keys


class UTCDateTime(TypeDecorator):
    """Timestamps are stored in UTC and always come back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: Baton stores timezone-aware UTC times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Deployment(Base):
    """One upload of a bundle: its files are kept verbatim for download and re-parsing."""

    __tablename__ = "deployment"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    deployed_by: Mapped[str] = mapped_column(String(150))
    deployed_at: Mapped[datetime] = mapped_column(UTCDateTime())

    files: Mapped[list[DeploymentFile]] = relationship(
        back_populates="deployment", cascade="all, delete-orphan", order_by="DeploymentFile.filename"
    )


class DeploymentFile(Base):
    __tablename__ = "deployment_file"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployment.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(10))  # bpmn | dmn | form
    content: Mapped[bytes] = mapped_column(LargeBinary)

    deployment: Mapped[Deployment] = relationship(back_populates="files")

    __table_args__ = (UniqueConstraint("deployment_id", "filename"),)


class ProcessDefinition(Base):
    """A deployed version of one executable process (``key`` is the BPMN process id)."""

    __tablename__ = "process_definition"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(255))
    version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str | None] = mapped_column(String(255))
    content_hash: Mapped[str] = mapped_column(String(64))
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployment.id"), index=True)
    deployed_by: Mapped[str] = mapped_column(String(150))
    deployed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Typed start events: [{"element_id", "kind": timer|message|signal, "name" or "timer"+"expression"}]
    start_events: Mapped[list | None] = mapped_column(JSON)

    deployment: Mapped[Deployment] = relationship()

    __table_args__ = (UniqueConstraint("key", "version"),)


class ProcessInstance(Base):
    """One running or finished instance; ``engine_state`` is the serialized workflow without its spec."""

    __tablename__ = "process_instance"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    definition_id: Mapped[int] = mapped_column(ForeignKey("process_definition.id"), index=True)
    definition_key: Mapped[str] = mapped_column(String(255), index=True)
    business_key: Mapped[str | None] = mapped_column(String(255), index=True)
    state: Mapped[str] = mapped_column(String(20), index=True)  # running|suspended|error|completed|cancelled
    started_by: Mapped[str | None] = mapped_column(String(150), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    engine_state: Mapped[str | None] = mapped_column(Text)
    serializer_version: Mapped[str] = mapped_column(String(20))
    next_timer_due: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    error_element: Mapped[str | None] = mapped_column(String(255))
    error_message: Mapped[str | None] = mapped_column(Text)
    sla_paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    # the starter's department when the instance started (a manager's tracking list filters on it,
    # see migration 0009): kept as history, so no foreign key rewrites it later
    starter_department_id: Mapped[int | None] = mapped_column(Integer)

    definition: Mapped[ProcessDefinition] = relationship()

    __mapper_args__ = {"version_id_col": version}


# the managers' instance list (web/manage.py): a department's instances, newest first, by index walk;
# the recently ended ones, and an end-date range (ended_at is written once, so the index costs little)
Index(
    "ix_process_instance_department_started",
    ProcessInstance.starter_department_id,
    ProcessInstance.started_at,
)
Index("ix_process_instance_ended_at", ProcessInstance.ended_at)


class HumanTask(Base):
    """Query-friendly projection of the engine's READY user and manual tasks (the inbox)."""

    __tablename__ = "human_task"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the engine task's UUID
    instance_id: Mapped[str] = mapped_column(ForeignKey("process_instance.id", ondelete="CASCADE"))
    definition_key: Mapped[str] = mapped_column(String(255))
    element_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255))
    lane: Mapped[str | None] = mapped_column(String(255))
    assignee: Mapped[str | None] = mapped_column(String(150))
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    warn_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # SLA warning from here (80% of the time)
    priority: Mapped[int] = mapped_column(Integer, default=50)
    form_key: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(20))  # ready|completed|cancelled
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(150))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_by: Mapped[str | None] = mapped_column(String(150))
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    # who the task is or was offered to, {"users": [...], "groups": [...]}: read with the row (no join)
    # and kept once it closes; the indexed rows of task_candidate are the OPEN offers only
    offers: Mapped[dict | None] = mapped_column(JSON)

    instance: Mapped[ProcessInstance] = relationship()
    candidates: Mapped[list[TaskCandidate]] = relationship(cascade="all, delete-orphan", passive_deletes=True)

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        Index("ix_human_task_instance_state", "instance_id", "state"),
        Index("ix_human_task_assignee_state_due", "assignee", "state", "due_at"),
        Index("ix_human_task_state_due", "state", "due_at"),
        # the inbox (engine/query.py: one UNION member per way a task reaches a user, each an
        # index walk in page order): claimed or handled by a user, and the unassigned pool
        Index("ix_human_task_claimed_state_due", "claimed_by", "state", "due_at"),
        Index("ix_human_task_completed_state_due", "completed_by", "state", "due_at"),
        Index(
            "ix_human_task_unassigned_due",
            "state",
            "due_at",
            "created_at",
            "id",
            postgresql_where=text("assignee IS NULL"),
            sqlite_where=text("assignee IS NULL"),
        ),
    )


# the unassigned pool in ``sort=priority`` order (priority descending, then due date ascending)
Index(
    "ix_human_task_unassigned_priority",
    HumanTask.state,
    HumanTask.priority.desc(),
    HumanTask.due_at,
    HumanTask.id,
    postgresql_where=HumanTask.assignee.is_(None),
    sqlite_where=HumanTask.assignee.is_(None),
)


class TaskCandidate(Base):
    """One candidate user or group of an open task: indexed, so "my groups' tasks" is one index scan."""

    __tablename__ = "task_candidate"

    task_id: Mapped[str] = mapped_column(ForeignKey("human_task.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(5), primary_key=True)  # user | group
    name: Mapped[str] = mapped_column(String(150), primary_key=True)

    # task_id too: "the tasks offered to me and my groups" is read from the index alone
    __table_args__ = (Index("ix_task_candidate_kind_name_task", "kind", "name", "task_id"),)


class Job(Base):
    """Work the scheduler must do at a time: timers now, retries and async steps later."""

    __tablename__ = "job"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(20))  # timer | start_timer | retry
    instance_id: Mapped[str | None] = mapped_column(ForeignKey("process_instance.id", ondelete="CASCADE"))
    definition_id: Mapped[int | None] = mapped_column(ForeignKey("process_definition.id"))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    state: Mapped[str] = mapped_column(String(10), default="pending")  # pending | failed
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    last_error: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict | None] = mapped_column(JSON)  # e.g. a start timer's element and remaining cycles
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_job_state_due", "state", "due_at"),
        Index("ix_job_instance_kind", "instance_id", "kind", unique=True),
    )


class AuditEntry(Base):
    """Append-only record of every state change (a database trigger refuses UPDATE and DELETE)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str | None] = mapped_column(String(150))
    action: Mapped[str] = mapped_column(String(50))
    instance_id: Mapped[str | None] = mapped_column(String(36), index=True)
    task_id: Mapped[str | None] = mapped_column(String(36))
    element_id: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict | None] = mapped_column(JSON)


class MessageSubscription(Base):
    """Which instance waits for which message (name + correlation key): messages route by index."""

    __tablename__ = "message_subscription"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    instance_id: Mapped[str] = mapped_column(
        ForeignKey("process_instance.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(10), default="message", server_default="message")  # or signal
    message_name: Mapped[str] = mapped_column(String(255))
    correlation_key: Mapped[str | None] = mapped_column(String(255))
    task_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_message_subscription_name_key", "kind", "message_name", "correlation_key"),)


class Department(Base):
    """One node of the org chart: a name unique among its siblings, an optional manager (主管)."""

    __tablename__ = "department"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("department.id"), index=True)
    # use_alter: department and user_account reference each other
    manager_id: Mapped[int | None] = mapped_column(
        ForeignKey("user_account.id", ondelete="SET NULL", use_alter=True), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    parent: Mapped[Department | None] = relationship(remote_side=[id])
    manager: Mapped[UserAccount | None] = relationship(foreign_keys=[manager_id], post_update=True)

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (UniqueConstraint("parent_id", "name"),)


# NULLs are distinct in unique constraints: top-level departments need their own unique index.
Index(
    "uq_department_root_name",
    Department.name,
    unique=True,
    sqlite_where=Department.parent_id.is_(None),
    postgresql_where=Department.parent_id.is_(None),
)


class UserAccount(Base):
    """A person who signs in (``user`` is a reserved word in PostgreSQL, hence the table name)."""

    __tablename__ = "user_account"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(255))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))  # admin | designer | manager | employee
    state: Mapped[str] = mapped_column(String(10), index=True)  # active | frozen
    locale: Mapped[str] = mapped_column(String(10))  # zh_CN | en
    department_id: Mapped[int | None] = mapped_column(
        ForeignKey("department.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    department: Mapped[Department | None] = relationship(foreign_keys=[department_id])
    groups: Mapped[list[UserGroup]] = relationship(
        secondary="group_member", back_populates="members", order_by="UserGroup.name"
    )

    __mapper_args__ = {"version_id_col": version}


class UserGroup(Base):
    """A named set of users: BPMN candidate groups and lanes refer to groups by ``name``."""

    __tablename__ = "user_group"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    title: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    members: Mapped[list[UserAccount]] = relationship(
        secondary="group_member", back_populates="groups", order_by="UserAccount.username"
    )


class GroupMember(Base):
    __tablename__ = "group_member"

    group_id: Mapped[int] = mapped_column(ForeignKey("user_group.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class ApiToken(Base):
    """A personal API token: only the SHA-256 of the token is kept; the token is shown once."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[UserAccount] = relationship()


class LoginThrottle(Base):
    """Failed sign-ins per username (known or not): too many in a row lock the name for a while."""

    __tablename__ = "login_throttle"

    username: Mapped[str] = mapped_column(String(150), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Comment(Base):
    """A remark on an instance (and optionally one of its tasks): approvers' notes, questions, replies."""

    __tablename__ = "comment"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    instance_id: Mapped[str] = mapped_column(
        ForeignKey("process_instance.id", ondelete="CASCADE"), index=True
    )
    task_id: Mapped[str | None] = mapped_column(String(36))
    author: Mapped[str] = mapped_column(String(150))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SavedFilter(Base):
    """A named filter (a query string) a user keeps on the server: of the inbox, or (``kind``) of
    another list such as the managers' instance list."""

    __tablename__ = "saved_filter"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(150), index=True)
    kind: Mapped[str] = mapped_column(String(20), default="inbox", server_default="inbox")
    name: Mapped[str] = mapped_column(String(100))
    query: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("username", "kind", "name"),)


class Attachment(Base):
    """A file uploaded with a task's form; task data keeps a reference, the bytes live here."""

    __tablename__ = "attachment"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[str] = mapped_column(
        ForeignKey("process_instance.id", ondelete="CASCADE"), index=True
    )
    task_id: Mapped[str | None] = mapped_column(String(36))
    field: Mapped[str] = mapped_column(String(255))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    uploaded_by: Mapped[str] = mapped_column(String(150))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# ---------------------------------------------------------------------------------------------------------
# CRM records: customers, contacts, contracts (line items, payment plan), payments, tickets.
# The service over them is engine/records.py (docs/records.md); schema in migration 0012.
# Money is Numeric(14, 2) everywhere and Decimal in Python, never float.

MONEY = Numeric(14, 2)


class _CrmRecord:
    """What every CRM record carries: who it belongs to (permission scoping), times, optimistic lock."""

    owner: Mapped[str | None] = mapped_column(String(150), index=True)  # a username
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    @declared_attr
    def department_id(cls) -> Mapped[int | None]:
        return mapped_column(ForeignKey("department.id", ondelete="SET NULL"), index=True)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict:
        return {"version_id_col": cls.version}


class CrmCustomer(_CrmRecord, Base):
    __tablename__ = "crm_customer"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    industry: Mapped[str | None] = mapped_column(String(100))
    phone: Mapped[str | None] = mapped_column(String(50))
    email: Mapped[str | None] = mapped_column(String(255))
    address: Mapped[str | None] = mapped_column(String(500))
    notes: Mapped[str | None] = mapped_column(Text)


class CrmContact(_CrmRecord, Base):
    __tablename__ = "crm_contact"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("crm_customer.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    title: Mapped[str | None] = mapped_column(String(100))
    phone: Mapped[str | None] = mapped_column(String(50))
    email: Mapped[str | None] = mapped_column(String(255))
    notes: Mapped[str | None] = mapped_column(Text)

    customer: Mapped[CrmCustomer] = relationship()


class CrmContract(_CrmRecord, Base):
    """A contract: draft → in_review → approved (frozen) | rejected (archived with its reason)."""

    __tablename__ = "crm_contract"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str | None] = mapped_column(String(50), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    customer_id: Mapped[int] = mapped_column(ForeignKey("crm_customer.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), index=True)
    amount: Mapped[Decimal] = mapped_column(MONEY)
    currency: Mapped[str] = mapped_column(String(3))
    signed_on: Mapped[date | None] = mapped_column(Date)
    reject_reason: Mapped[str | None] = mapped_column(Text)
    decided_by: Mapped[str | None] = mapped_column(String(150))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    customer: Mapped[CrmCustomer] = relationship()
    items: Mapped[list[CrmContractItem]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="CrmContractItem.position"
    )
    plan: Mapped[list[CrmInstalment]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="CrmInstalment.position"
    )


class CrmContractItem(Base):
    __tablename__ = "crm_contract_item"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("crm_contract.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    product: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(String(500))
    quantity: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    unit_price: Mapped[Decimal] = mapped_column(MONEY)
    amount: Mapped[Decimal] = mapped_column(MONEY)


class CrmInstalment(Base):
    """One instalment of a contract's payment plan (回款计划): an amount due on a date."""

    __tablename__ = "crm_instalment"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("crm_contract.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    due_on: Mapped[date] = mapped_column(Date)
    amount: Mapped[Decimal] = mapped_column(MONEY)
    note: Mapped[str | None] = mapped_column(String(500))


class CrmPayment(_CrmRecord, Base):
    """A payment received against a contract (回款); it counts only once approved (回款审核)."""

    __tablename__ = "crm_payment"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("crm_contract.id"))
    amount: Mapped[Decimal] = mapped_column(MONEY)
    received_on: Mapped[date] = mapped_column(Date)
    method: Mapped[str | None] = mapped_column(String(50))
    reference: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), index=True)  # pending | approved | rejected
    review_note: Mapped[str | None] = mapped_column(Text)
    reviewed_by: Mapped[str | None] = mapped_column(String(150))
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    contract: Mapped[CrmContract] = relationship()

    __table_args__ = (Index("ix_crm_payment_contract_status", "contract_id", "status"),)


# collected = approved payments only (computed where it is read: it can never drift from the payments)
CrmContract.collected = column_property(
    select(func.coalesce(func.sum(CrmPayment.amount), 0))
    .where(CrmPayment.contract_id == CrmContract.id, CrmPayment.status == "approved")
    .correlate_except(CrmPayment)
    .scalar_subquery(),
    deferred=False,
)


class CrmTicket(_CrmRecord, Base):
    """A work order (工单): consultation, suggestion, complaint or repair."""

    __tablename__ = "crm_ticket"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("crm_customer.id"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("crm_contact.id", ondelete="SET NULL"))
    type: Mapped[str] = mapped_column(String(20))
    priority: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(20), index=True)
    subject: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    assignee: Mapped[str | None] = mapped_column(String(150), index=True)
    vendor: Mapped[str | None] = mapped_column(String(200))
    rating: Mapped[int | None] = mapped_column(Integer)
    resolution: Mapped[str | None] = mapped_column(Text)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    customer: Mapped[CrmCustomer | None] = relationship()


class CrmRecordLink(Base):
    """A record a process instance acted on (a connector call). Instances whose business key is
    ``"<type>:<id>"`` (e.g. ``contract:42``) belong to that record too, without a row here.

    The foreign key is checked at commit: an instance's first step may write a record before the
    instance row itself is inserted (both in the same transaction).
    """

    __tablename__ = "crm_record_link"

    record_type: Mapped[str] = mapped_column(String(20), primary_key=True)  # customer | contact | ...
    record_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[str] = mapped_column(
        ForeignKey("process_instance.id", ondelete="CASCADE", deferrable=True, initially="DEFERRED"),
        primary_key=True,
        index=True,
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# ---------------------------------------------------------------------------------------------
# Approval features (migration 0013): CC (抄送)


class InstanceCc(Base):
    """A user copied on an instance (抄送): they may read it, never act on it. Written when a task
    with the ``cc`` property opens (engine/task_properties.py)."""

    __tablename__ = "instance_cc"

    # checked at commit: a task opening in an instance's first step names people before the
    # instance row itself is written (same transaction)
    instance_id: Mapped[str] = mapped_column(
        ForeignKey("process_instance.id", ondelete="CASCADE", deferrable=True, initially="DEFERRED"),
        primary_key=True,
    )
    username: Mapped[str] = mapped_column(String(150), primary_key=True, index=True)
    element_id: Mapped[str | None] = mapped_column(String(255))  # the task whose property named them
    added_by: Mapped[str | None] = mapped_column(String(150))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime())


# ---------------------------------------------------------------------------------------------
# Measures (engine/measures.py, migration 0010): each figure of a process is a range scan of one
# of these indexes, read from the index alone on PostgreSQL (INCLUDE: no visit to the wide
# instance rows, which carry the engine state). SQLite gets the key columns only.

Index(
    "ix_process_instance_measures_started",
    ProcessInstance.definition_key,
    ProcessInstance.started_at,
    postgresql_include=["state", "starter_department_id", "definition_id"],
)
Index(
    "ix_process_instance_measures_ended",
    ProcessInstance.definition_key,
    ProcessInstance.ended_at,
    postgresql_include=["state", "started_at", "starter_department_id", "definition_id"],
)
Index(
    "ix_human_task_measures",
    HumanTask.definition_key,
    HumanTask.created_at,
    postgresql_include=["element_id", "state", "completed_at", "due_at", "instance_id"],
)


EVERYONE = -1  # MeasureTally.department_id of the settled rows that sum every department


class MeasureTally(Base):
    """Counts behind the measures (engine/measures.py), per process, department, UTC hour and state.

    Database triggers (migration 0014) append a row for every write of ``process_instance`` or
    ``human_task`` that changes what a figure counts: minus the row as it was, plus the row as it
    is (``settled`` false). They only insert, so writers never wait on one another here;
    ``MeasureService.settle`` folds them into one settled row per key, and into one per key for all
    departments together (``department_id`` = ``EVERYONE``: what an administrator's figures read).
    A figure is the sum of the settled and the unsettled rows of its key, so it is right whether
    or not they were folded yet.

    ``kind``: ``started`` (hour the instance started, its state now), ``ended`` (hour it completed
    or was cancelled; cycle time in ``total_ms``), ``task`` (hour the task was created, its state
    now; for completed tasks the time to completion in ``total_ms``, ``due_n`` with a due time,
    ``late_n`` closed after it). ``timed_n``: how many times ``total_ms`` sums.
    """

    __tablename__ = "measure_tally"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    definition_key: Mapped[str] = mapped_column(String(255))
    department_id: Mapped[int] = mapped_column(Integer)  # the starter's department; 0: none; -1: all
    hour: Mapped[int] = mapped_column(Integer)  # hours since 1970 (UTC)
    kind: Mapped[str] = mapped_column(String(8))
    element_id: Mapped[str] = mapped_column(String(255))  # '' for instance kinds
    state: Mapped[str] = mapped_column(String(20))
    n: Mapped[int] = mapped_column(Integer)
    timed_n: Mapped[int] = mapped_column(Integer)
    total_ms: Mapped[int] = mapped_column(BigInteger)
    due_n: Mapped[int] = mapped_column(Integer)
    late_n: Mapped[int] = mapped_column(Integer)
    settled: Mapped[bool] = mapped_column(Boolean)

    __table_args__ = (
        Index(
            "ix_measure_tally_unsettled",
            "definition_key",
            "kind",
            "hour",
            postgresql_where=text("NOT settled"),
            sqlite_where=text("NOT settled"),
        ),
        Index(
            "ux_measure_tally_settled",
            "definition_key",
            "kind",
            "department_id",
            "hour",
            "element_id",
            "state",
            unique=True,
            postgresql_where=text("settled"),
            sqlite_where=text("settled"),
        ),
    )
