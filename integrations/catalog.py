"""The operations Baton's service tasks can call, as one registry for the engine (docs/connectors.md)."""

from __future__ import annotations

from engine.connectors import Connectors
from integrations import crm
from integrations.mail import Mailer, MailSettings


def default_connectors(mail: MailSettings | None = None) -> Connectors:
    """CRM operations and ``send_mail`` (SMTP settings from the environment unless given)."""
    connectors = Connectors(crm.OPERATIONS)
    connectors.register("send_mail", Mailer(mail or MailSettings.from_env()))
    return connectors
