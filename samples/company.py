"""The demo company (演示公司): the org chart the shipped processes resolve their people from.

processes/approval asks for ``manager(initiator)``, ``department_head('财务部')``,
``department_head('总经理办公室')`` (the general manager), ``members('purchase_review')`` (countersign)
and ``members('finance')`` (finance check); processes/ticket for the group ``agents`` and
``department_head('客服部')`` (the team lead). Every department sits under 总经理办公室, so the general
manager is the manager of every department head: the approval escalation to "the approver's
manager" always finds someone. Vendors (厂商) are not staff: they answer through a signed link.

``load_company`` is idempotent (an existing demo database keeps what it has and gains what is new).
The demo password is for trying Baton out, never for production.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from engine.errors import ConflictError
from engine.facade import Engine

DEMO_PASSWORD = "baton-demo"
MAIL_DOMAIN = "example.com"  # demo addresses: reserved for examples, mail to them goes nowhere


@dataclass(frozen=True)
class Person:
    username: str
    name: str
    role: str  # admin | designer | manager | employee
    department: str
    groups: tuple[str, ...] = ()
    duty: str = ""  # what they do in the demo (printed by ``baton demo``)


# department -> its manager; the first one is the root, the others sit directly under it
DEPARTMENTS = {
    "总经理办公室": "zhaoming",
    "销售部": "wangqiang",
    "客服部": "sunli",
    "财务部": "chenjing",
    "法务部": "lihua",
}
ROOT = "总经理办公室"
SUPPORT_DEPARTMENT = "客服部"  # takes the tickets customers raise themselves (/support/new)

PEOPLE = (
    Person("admin", "系统管理员", "admin", ROOT, duty="people, every instance"),
    Person("designer", "流程设计 Designer", "designer", ROOT, duty="draws and deploys processes"),
    Person("zhaoming", "赵明 (总经理)", "manager", ROOT, ("managers",),
           "general manager: large expenses, long leave, contracts above 100,000"),
    Person("wangqiang", "王强 (销售经理)", "manager", "销售部", ("managers",),
           "sales manager: approves 销售部's requests, tracks their instances"),
    Person("zhangwei", "张伟", "employee", "销售部", ("employee",),
           "sales rep: raises requests, drafts contracts (the tour starts here)"),
    Person("lina", "李娜", "employee", "销售部", ("employee",), "sales rep"),
    Person("wangfang", "王芳", "employee", "销售部", ("employee",), "sales rep"),
    Person("liuyang", "刘洋", "employee", "销售部", ("employee",), "sales rep"),
    Person("sunli", "孙丽 (客服主管)", "manager", "客服部", ("agents", "managers"),
           "service lead: tickets past their SLA"),
    Person("zhouxin", "周鑫 (客服)", "employee", "客服部", ("agents", "employee"),
           "agent: handles tickets, hands them to the vendor"),
    Person("wuhao", "吴昊 (客服)", "employee", "客服部", ("agents", "employee"), "agent"),
    Person("chenjing", "陈静 (财务经理)", "manager", "财务部", ("finance", "managers"),
           "finance head: expenses above 5,000, contracts, payments"),
    Person("huangmin", "黄敏 (会计)", "employee", "财务部", ("finance", "purchase_review", "employee"),
           "accountant: finance check, purchase countersign"),
    Person("lihua", "李华 (法务经理)", "manager", "法务部", ("managers", "purchase_review"),
           "legal head: contract review, purchase countersign"),
    Person("gaofeng", "高峰 (法务)", "employee", "法务部", ("purchase_review", "employee"),
           "legal: purchase countersign"),
)  # fmt: skip

GROUP_TITLES = {
    "agents": "客服 Agents",
    "finance": "财务 Finance",
    "purchase_review": "采购评审（会签） Purchase review (countersign)",
    "managers": "经理 Managers",
    "employee": "员工 Employees",
}

# The demo vendor (厂商): no account; an agent sends it a signed link for one ticket step.
VENDOR = "华成设备 Huacheng Devices"
VENDOR_EMAIL = f"service@huacheng.{MAIL_DOMAIN}"


def email_of(username: str) -> str:
    return f"{username}@{MAIL_DOMAIN}"


def load_company(engine: Engine, *, password: str = DEMO_PASSWORD) -> Iterator[str]:
    """Create the departments, groups and people that are missing; yields one line per new user."""
    identity = engine.identity
    for department in DEPARTMENTS:
        if not identity.departments().name(department).count():
            parent = None if department == ROOT else ROOT
            identity.create_department(department, parent, actor="demo")
    existing_groups = {g.name for g in identity.groups().list()}
    for group, title in GROUP_TITLES.items():
        if group not in existing_groups:
            identity.create_group(group, title, actor="demo")
    for person in PEOPLE:
        try:
            identity.create_user(
                person.username,
                password,
                role=person.role,
                display_name=person.name,
                email=email_of(person.username),
                department=person.department,
                groups=person.groups,
                actor="demo",
            )
            yield f"user {person.username} created"
        except ConflictError:
            continue
    for department, manager in DEPARTMENTS.items():
        identity.set_department_manager(department, manager, actor="demo")


def demo_accounts(password: str = DEMO_PASSWORD) -> Iterator[str]:
    """The lines ``baton demo`` prints on every start: who is who, and how to log in."""
    yield f"Demo accounts, password {password} (for trying Baton out, never for production):"
    for p in PEOPLE:
        yield f"  {p.username:<10} {p.role:<9} {p.name} · {p.department} — {p.duty}"
    yield f"Vendor (no account: answers through a signed link): {VENDOR} <{VENDOR_EMAIL}>"
