"""``send_mail``: notification e-mails from BPMN service tasks, over SMTP (docs/connectors.md).

Recipients are usernames (their e-mail address and language come from the identity tables, read in the
step's transaction) or plain addresses. Each recipient gets one plain-text message in their language
(``zh_CN`` or ``en``), from a built-in template or from the task's own ``subject``/``body``.

Delivery is at least once: the message is sent while the step runs; if the SMTP server cannot be reached
the step fails with a retryable ``ConnectorError`` (the engine retries with back-off, then raises an
incident), and a retry after a partial failure may send a message twice. Nothing connects at import or
construction time: settings are read by ``MailSettings.from_env`` and a connection is opened per call.
"""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from string import Template
from typing import Any

from sqlalchemy import select

from engine.connectors import ConnectorCall, ConnectorError
from engine.models import UserAccount

LOCALES = ("zh_CN", "en")
DEFAULT_LOCALE = "zh_CN"
MAX_RECIPIENTS = 100

# name -> locale -> (subject, body); ${placeholders} are filled from ``values`` (missing ones: empty)
TEMPLATES: dict[str, dict[str, tuple[str, str]]] = {
    "task_waiting": {
        "zh_CN": ("待办：${task}", "您有一项待办任务「${task}」（流程：${process}）。\n\n请处理：${link}\n"),
        "en": (
            "To do: ${task}",
            "A task is waiting for you: ${task} (process: ${process}).\n\nOpen it: ${link}\n",
        ),
    },
    "sla_reminder": {
        "zh_CN": ("即将超时：${task}", "任务「${task}」将于 ${due} 到期，请尽快处理。\n\n${link}\n"),
        "en": ("Due soon: ${task}", "The task ${task} is due ${due}. Please handle it soon.\n\n${link}\n"),
    },
    "request_approved": {
        "zh_CN": ("审批通过：${title}", "您提交的「${title}」已审批通过。\n${comment}\n\n${link}\n"),
        "en": ("Approved: ${title}", "Your request ${title} was approved.\n${comment}\n\n${link}\n"),
    },
    "request_rejected": {
        "zh_CN": ("审批未通过：${title}", "您提交的「${title}」未获批准。\n意见：${comment}\n\n${link}\n"),
        "en": ("Rejected: ${title}", "Your request ${title} was rejected.\nComment: ${comment}\n\n${link}\n"),
    },
    "ticket_opened": {
        "zh_CN": (
            "工单 ${number} 已受理：${subject}",
            "您的工单 ${number}「${subject}」已受理，我们会尽快处理。\n\n${link}\n",
        ),
        "en": (
            "Ticket ${number} received: ${subject}",
            "Your ticket ${number} (${subject}) was received; we will get back to you soon.\n\n${link}\n",
        ),
    },
    "ticket_received": {
        "zh_CN": (
            "已收到您的工单 ${number}：${subject}",
            "${name}，您好：\n\n我们已收到您的工单 ${number}「${subject}」，客服人员会尽快与您联系。\n"
            "来信时请注明工单号 ${number}。\n\n（此邮件由系统自动发送）\n",
        ),
        "en": (
            "We received your request ${number}: ${subject}",
            "Hello ${name},\n\nWe received your request ${number} (${subject}). One of our agents will "
            "contact you soon.\nPlease quote ${number} when you write to us.\n\n(This message was sent "
            "automatically.)\n",
        ),
    },
    "ticket_escalated": {
        "zh_CN": (
            "请协助处理工单 ${number}：${subject}",
            "工单 ${number}「${subject}」需要贵司协助处理。\n\n问题描述：\n${description}\n\n"
            "请在此回复：${link}\n",
        ),
        "en": (
            "Please handle ticket ${number}: ${subject}",
            "Ticket ${number} (${subject}) needs your help.\n\nDescription:\n${description}\n\n"
            "Reply here: ${link}\n",
        ),
    },
    "ticket_resolved": {
        "zh_CN": (
            "工单 ${number} 已解决：${subject}",
            "您的工单 ${number}「${subject}」已解决。\n处理结果：${resolution}\n\n欢迎评价：${link}\n",
        ),
        "en": (
            "Ticket ${number} resolved: ${subject}",
            "Your ticket ${number} (${subject}) was resolved.\nResolution: ${resolution}\n\n"
            "Rate our service: ${link}\n",
        ),
    },
    "contract_approved": {
        "zh_CN": (
            "合同已批准：${number} ${title}",
            "合同 ${number}「${title}」已审批通过，现已锁定不可修改。\n\n${link}\n",
        ),
        "en": (
            "Contract approved: ${number} ${title}",
            "Contract ${number} (${title}) was approved and is now frozen.\n\n${link}\n",
        ),
    },
    "contract_rejected": {
        "zh_CN": (
            "合同未通过：${number} ${title}",
            "合同 ${number}「${title}」未通过审批。\n原因：${reason}\n\n${link}\n",
        ),
        "en": (
            "Contract rejected: ${number} ${title}",
            "Contract ${number} (${title}) was rejected.\nReason: ${reason}\n\n${link}\n",
        ),
    },
    "payment_rejected": {
        "zh_CN": (
            "回款审核未通过：${contract}",
            "合同 ${contract} 的回款 ${amount} 审核未通过，请核对后重新提交。\n原因：${reason}\n\n${link}\n",
        ),
        "en": (
            "Payment not accepted: ${contract}",
            "The payment of ${amount} on contract ${contract} was not accepted: please check it and submit "
            "it again.\nReason: ${reason}\n\n${link}\n",
        ),
    },
}


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MailSettings:
    host: str | None = None  # None (BATON_SMTP_HOST unset): messages go to the log, nothing is sent
    port: int = 25
    user: str | None = None
    password: str | None = None
    sender: str = "baton@localhost"
    tls: str = "off"  # off | starttls | ssl
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.tls not in ("off", "starttls", "ssl"):
            raise ValueError(f"BATON_SMTP_TLS must be off, starttls or ssl, not {self.tls!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MailSettings:
        env = os.environ if environ is None else environ
        tls = env.get("BATON_SMTP_TLS", "off").strip().lower() or "off"
        default_port = {"ssl": 465, "starttls": 587}.get(tls, 25)
        return cls(
            host=env.get("BATON_SMTP_HOST", "").strip() or None,
            port=int(env.get("BATON_SMTP_PORT") or default_port),
            user=env.get("BATON_SMTP_USER") or None,
            password=env.get("BATON_SMTP_PASSWORD") or None,
            sender=env.get("BATON_SMTP_FROM", "baton@localhost"),
            tls=tls,
            timeout=float(env.get("BATON_SMTP_TIMEOUT") or 10),
        )


def normalize_locale(value: Any) -> str:
    text = str(value or "").replace("-", "_").lower()
    return "en" if text.startswith("en") else DEFAULT_LOCALE


def render(text: str, values: Mapping[str, Any]) -> str:
    """Fill ``${name}`` placeholders (``$$`` is a dollar sign); a missing value is left empty."""
    return Template(text).safe_substitute(defaultdict(str, {k: _text(v) for k, v in values.items()}))


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class Mailer:
    """The ``send_mail`` operation (see the module doc); one SMTP connection per call."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings

    def __call__(self, params: dict[str, Any], call: ConnectorCall) -> dict[str, Any]:
        locale = normalize_locale(params.get("locale"))
        recipients = self._recipients(call, params.get("to"), locale)
        values = params.get("values") or {}
        if not isinstance(values, Mapping):
            raise ConnectorError("send_mail: 'values' must be a dict", retryable=False)
        messages = [
            self._message(params, values, address, lang, call.instance_id) for address, lang in recipients
        ]
        return self._deliver(messages, [address for address, _ in recipients])

    def send(
        self,
        template: str,
        to: str,
        *,
        locale: str,
        values: Mapping[str, Any],
        instance_id: str | None = None,
    ) -> dict[str, Any]:
        """One message from a built-in template to a plain address, outside a process step
        (web/support.py acknowledges a customer's request in their language): sent, or logged without
        ``BATON_SMTP_HOST``, as the operation does. Raises ``ConnectorError`` (an unknown template, an
        address that is not one, the SMTP server failing)."""
        address = " ".join(str(to or "").split())
        if "@" not in address or "," in address:
            raise ConnectorError(f"send_mail: {address!r} is not an e-mail address", retryable=False)
        params = {"template": template}
        message = self._message(params, values, address, normalize_locale(locale), instance_id)
        return self._deliver([message], [address])

    def _deliver(self, messages: list[EmailMessage], addresses: list[str]) -> dict[str, Any]:
        if self.settings.host is None:
            # no SMTP server configured (a fresh install, the demo): say what would have gone out
            # instead of failing the step: a process must not stop because mail is not set up yet
            for message in messages:
                log.info("mail not sent (no BATON_SMTP_HOST): to %s: %s", message["To"], message["Subject"])
            return {"sent": 0, "logged": len(messages), "recipients": addresses}
        self._send(messages)
        return {"sent": len(messages), "recipients": addresses}

    def _recipients(self, call: ConnectorCall, to: Any, locale: str) -> list[tuple[str, str]]:
        names = [to] if isinstance(to, str) else list(to) if isinstance(to, list | tuple) else []
        names = [str(n).strip() for n in names if str(n or "").strip()]
        if not names or len(names) > MAX_RECIPIENTS:
            raise ConnectorError(f"send_mail: 'to' needs 1 to {MAX_RECIPIENTS} recipients", retryable=False)
        found: dict[str, str] = {}
        for name in names:
            if "@" in name:
                found.setdefault(name, locale)
                continue
            user = call.session.execute(
                select(UserAccount.email, UserAccount.locale).where(UserAccount.username == name)
            ).first()
            if user is None:
                raise ConnectorError(f"send_mail: no user {name!r}", retryable=False)
            if not user.email:
                raise ConnectorError(f"send_mail: user {name!r} has no e-mail address", retryable=False)
            found.setdefault(user.email, normalize_locale(user.locale))
        return list(found.items())

    def _message(
        self,
        params: Mapping[str, Any],
        values: Mapping[str, Any],
        address: str,
        locale: str,
        instance_id: str | None,
    ) -> EmailMessage:
        name = params.get("template")
        if name:
            if name not in TEMPLATES:
                known = ", ".join(sorted(TEMPLATES))
                raise ConnectorError(f"send_mail: no template {name!r} (known: {known})", retryable=False)
            subject, body = TEMPLATES[name][locale]
        else:
            subject, body = _localized(params.get("subject"), locale), _localized(params.get("body"), locale)
            if not subject:
                raise ConnectorError("send_mail: give a template, or a subject and a body", retryable=False)
        message = EmailMessage()
        message["Subject"] = " ".join(render(subject, values).split())  # one line: no header injection
        message["From"] = self.settings.sender
        message["To"] = address
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=self.settings.sender.rpartition("@")[2] or None)
        if instance_id:
            message["X-Baton-Instance"] = instance_id
        message.set_content(render(body or "", values))
        message["Content-Language"] = "en" if locale == "en" else "zh-CN"  # after: set_content drops it
        return message

    def _send(self, messages: list[EmailMessage]) -> None:
        settings = self.settings
        try:
            if settings.tls == "ssl":
                client = smtplib.SMTP_SSL(
                    settings.host,
                    settings.port,
                    timeout=settings.timeout,
                    context=ssl.create_default_context(),
                )
            else:
                client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
            with client:
                if settings.tls == "starttls":
                    client.starttls(context=ssl.create_default_context())
                if settings.user:
                    client.login(settings.user, settings.password or "")
                for message in messages:
                    client.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            refused = ", ".join(sorted(exc.recipients))
            raise ConnectorError(f"send_mail: the SMTP server refused {refused}", retryable=False) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise ConnectorError(
                f"send_mail: SMTP server {settings.host}:{settings.port} failed: "
                f"{exc.__class__.__name__}: {exc}"
            ) from exc


def _localized(value: Any, locale: str) -> str:
    """Text, or ``{"zh_CN": ..., "en": ...}`` (``zh`` works too) picked by language."""
    if isinstance(value, Mapping):
        by_locale = {normalize_locale(k): v for k, v in value.items()}
        value = by_locale.get(locale) or by_locale.get(DEFAULT_LOCALE) or next(iter(by_locale.values()), "")
    return _text(value)
