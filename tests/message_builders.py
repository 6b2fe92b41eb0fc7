"""Small BPMN documents with message and signal events, written out in full like ``bpmn_builders``.

Correlation follows BPMN as SpiffWorkflow reads it: a ``bpmn:correlationProperty`` with one
``correlationPropertyRetrievalExpression`` per message; Baton evaluates the expression against the
waiting instance's data to index it, and SpiffWorkflow evaluates it against the message payload.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

HEADER = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" '
    'xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core" '
    'id="defs_{pid}" targetNamespace="http://baton.test">\n'
)


def _document(pid: str, body: list[str], *, before: Sequence[str] = (), after: Sequence[str] = ()) -> bytes:
    xml = (
        HEADER.format(pid=pid)
        + "".join(line + "\n" for line in before)
        + f'<bpmn:process id="{pid}" name="{pid}" isExecutable="true">\n'
        + "\n".join(body)
        + "\n</bpmn:process>\n"
        + "".join(line + "\n" for line in after)
        + "</bpmn:definitions>\n"
    )
    return xml.encode()


def _message(message_id: str, name: str) -> str:
    return f'<bpmn:message id="{message_id}" name="{escape(name)}" />'


def _correlation(message_id: str, prop: str, expression: str) -> list[str]:
    """A correlation key with one property, retrieved from ``message_id`` by ``expression``."""
    return [
        f'<bpmn:collaboration id="collab_{prop}">'
        f'<bpmn:correlationKey name="{prop}_key"><bpmn:correlationPropertyRef>{prop}'
        "</bpmn:correlationPropertyRef></bpmn:correlationKey></bpmn:collaboration>",
        f'<bpmn:correlationProperty id="{prop}" name="{prop}">'
        f'<bpmn:correlationPropertyRetrievalExpression messageRef="{message_id}">'
        f"<bpmn:messagePath>{escape(expression)}</bpmn:messagePath>"
        "</bpmn:correlationPropertyRetrievalExpression></bpmn:correlationProperty>",
    ]


def _message_definition(message_id: str, variable: str | None) -> str:
    if variable is None:
        return f'<bpmn:messageEventDefinition messageRef="{message_id}" />'
    return (
        f'<bpmn:messageEventDefinition messageRef="{message_id}"><bpmn:extensionElements>'
        f"<spiffworkflow:messageVariable>{variable}</spiffworkflow:messageVariable>"
        "</bpmn:extensionElements></bpmn:messageEventDefinition>"
    )


def message_catch(
    pid: str = "order_payment",
    *,
    message: str = "payment_received",
    correlate_on: str | None = "order_id",
    expression: str | None = None,
    variable: str | None = None,
) -> bytes:
    """start -> intermediate message catch ``wait_payment`` -> user task ``ship`` -> end.

    With ``correlate_on`` the message carries a correlation property of that name whose retrieval
    expression is ``expression`` (default: the same name: the waiting instance's variable and the
    message's key). With
    ``variable`` the payload lands in that one variable (``spiffworkflow:messageVariable``).
    """
    before = [_message("msg", message)]
    if correlate_on:
        before += _correlation("msg", correlate_on, expression or correlate_on)
    body = [
        '<bpmn:startEvent id="start" />',
        f'<bpmn:intermediateCatchEvent id="wait_payment">{_message_definition("msg", variable)}'
        "</bpmn:intermediateCatchEvent>",
        '<bpmn:userTask id="ship" name="ship" />',
        '<bpmn:endEvent id="end" />',
        '<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="wait_payment" />',
        '<bpmn:sequenceFlow id="f2" sourceRef="wait_payment" targetRef="ship" />',
        '<bpmn:sequenceFlow id="f3" sourceRef="ship" targetRef="end" />',
    ]
    return _document(pid, body, before=before)


def conversation(pid: str = "conversation") -> bytes:
    """Two correlated messages in a row on one property ``order_id``: ``payment_received`` at
    ``wait_payment``, then ``goods_shipped`` at ``wait_shipping``, then user task ``close``."""
    before = [
        _message("msg_paid", "payment_received"),
        _message("msg_shipped", "goods_shipped"),
        '<bpmn:collaboration id="collab"><bpmn:correlationKey name="order_key">'
        "<bpmn:correlationPropertyRef>order_id</bpmn:correlationPropertyRef>"
        "</bpmn:correlationKey></bpmn:collaboration>",
        '<bpmn:correlationProperty id="order_id" name="order_id">'
        '<bpmn:correlationPropertyRetrievalExpression messageRef="msg_paid">'
        "<bpmn:messagePath>order_id</bpmn:messagePath></bpmn:correlationPropertyRetrievalExpression>"
        '<bpmn:correlationPropertyRetrievalExpression messageRef="msg_shipped">'
        "<bpmn:messagePath>order_id</bpmn:messagePath></bpmn:correlationPropertyRetrievalExpression>"
        "</bpmn:correlationProperty>",
    ]
    body = [
        '<bpmn:startEvent id="start" />',
        f'<bpmn:intermediateCatchEvent id="wait_payment">{_message_definition("msg_paid", None)}'
        "</bpmn:intermediateCatchEvent>",
        f'<bpmn:intermediateCatchEvent id="wait_shipping">{_message_definition("msg_shipped", None)}'
        "</bpmn:intermediateCatchEvent>",
        '<bpmn:userTask id="close" name="close" />',
        '<bpmn:endEvent id="end" />',
        '<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="wait_payment" />',
        '<bpmn:sequenceFlow id="f2" sourceRef="wait_payment" targetRef="wait_shipping" />',
        '<bpmn:sequenceFlow id="f3" sourceRef="wait_shipping" targetRef="close" />',
        '<bpmn:sequenceFlow id="f4" sourceRef="close" targetRef="end" />',
    ]
    return _document(pid, body, before=before)


def message_start(pid: str = "ticket", *, message: str = "ticket_raised") -> bytes:
    """A message start event ``raised`` -> user task ``triage`` -> end."""
    body = [
        f'<bpmn:startEvent id="raised">{_message_definition("msg", None)}</bpmn:startEvent>',
        '<bpmn:userTask id="triage" name="triage" />',
        '<bpmn:endEvent id="end" />',
        '<bpmn:sequenceFlow id="f1" sourceRef="raised" targetRef="triage" />',
        '<bpmn:sequenceFlow id="f2" sourceRef="triage" targetRef="end" />',
    ]
    return _document(pid, body, before=[_message("msg", message)])


def receive_task(pid: str = "receiver", *, message: str = "goods_delivered") -> bytes:
    """start -> receive task ``receive`` -> user task ``check`` -> end (no correlation)."""
    body = [
        '<bpmn:startEvent id="start" />',
        '<bpmn:receiveTask id="receive" name="receive" messageRef="msg" />',
        '<bpmn:userTask id="check" name="check" />',
        '<bpmn:endEvent id="end" />',
        '<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="receive" />',
        '<bpmn:sequenceFlow id="f2" sourceRef="receive" targetRef="check" />',
        '<bpmn:sequenceFlow id="f3" sourceRef="check" targetRef="end" />',
    ]
    return _document(pid, body, before=[_message("msg", message)])


def boundary_message(pid: str = "cancellable", *, message: str = "order_cancelled") -> bytes:
    """User task ``work`` with an interrupting message boundary event ``cancelled`` -> ``refund``."""
    body = [
        '<bpmn:startEvent id="start" />',
        '<bpmn:userTask id="work" name="work" />',
        f'<bpmn:boundaryEvent id="cancelled" attachedToRef="work" cancelActivity="true">'
        f"{_message_definition('msg', None)}</bpmn:boundaryEvent>",
        '<bpmn:userTask id="refund" name="refund" />',
        '<bpmn:endEvent id="end" />',
        '<bpmn:endEvent id="end_cancelled" />',
        '<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="work" />',
        '<bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="end" />',
        '<bpmn:sequenceFlow id="f3" sourceRef="cancelled" targetRef="refund" />',
        '<bpmn:sequenceFlow id="f4" sourceRef="refund" targetRef="end_cancelled" />',
    ]
    return _document(pid, body, before=[_message("msg", message)])


SIGNAL_DEFINITION = '<bpmn:signalEventDefinition signalRef="sig" />'


def _signal(name: str, variable: str | None) -> str:
    if variable is None:
        return f'<bpmn:signal id="sig" name="{escape(name)}" />'
    return (
        f'<bpmn:signal id="sig" name="{escape(name)}"><bpmn:extensionElements>'
        f"<spiffworkflow:variableName>{variable}</spiffworkflow:variableName>"
        "</bpmn:extensionElements></bpmn:signal>"
    )


def signal_catch(
    pid: str = "signal_waiter", *, signal: str = "market_closed", variable: str | None = None
) -> bytes:
    """start -> intermediate signal catch ``wait_signal`` -> user task ``after_signal`` -> end."""
    body = [
        '<bpmn:startEvent id="start" />',
        f'<bpmn:intermediateCatchEvent id="wait_signal">{SIGNAL_DEFINITION}</bpmn:intermediateCatchEvent>',
        '<bpmn:userTask id="after_signal" name="after_signal" />',
        '<bpmn:endEvent id="end" />',
        '<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="wait_signal" />',
        '<bpmn:sequenceFlow id="f2" sourceRef="wait_signal" targetRef="after_signal" />',
        '<bpmn:sequenceFlow id="f3" sourceRef="after_signal" targetRef="end" />',
    ]
    return _document(pid, body, before=[_signal(signal, variable)])


def signal_start(pid: str = "signal_started", *, signal: str = "market_closed") -> bytes:
    """A signal start event ``on_signal`` -> user task ``report`` -> end."""
    body = [
        f'<bpmn:startEvent id="on_signal">{SIGNAL_DEFINITION}</bpmn:startEvent>',
        '<bpmn:userTask id="report" name="report" />',
        '<bpmn:endEvent id="end" />',
        '<bpmn:sequenceFlow id="f1" sourceRef="on_signal" targetRef="report" />',
        '<bpmn:sequenceFlow id="f2" sourceRef="report" targetRef="end" />',
    ]
    return _document(pid, body, before=[_signal(signal, None)])


def event_gateway(pid: str = "race", *, message: str = "reply_received", timeout: str = '"PT1H"') -> bytes:
    """start -> event-based gateway -> message ``reply`` (-> ``handle_reply``) or timer ``timeout``
    (-> ``chase``)."""
    body = [
        '<bpmn:startEvent id="start" />',
        '<bpmn:eventBasedGateway id="gw" />',
        f'<bpmn:intermediateCatchEvent id="reply">{_message_definition("msg", None)}'
        "</bpmn:intermediateCatchEvent>",
        '<bpmn:intermediateCatchEvent id="timeout"><bpmn:timerEventDefinition>'
        f"<bpmn:timeDuration>{escape(timeout)}</bpmn:timeDuration>"
        "</bpmn:timerEventDefinition></bpmn:intermediateCatchEvent>",
        '<bpmn:userTask id="handle_reply" name="handle_reply" />',
        '<bpmn:userTask id="chase" name="chase" />',
        '<bpmn:endEvent id="end_reply" />',
        '<bpmn:endEvent id="end_chase" />',
        '<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="gw" />',
        '<bpmn:sequenceFlow id="f2" sourceRef="gw" targetRef="reply" />',
        '<bpmn:sequenceFlow id="f3" sourceRef="gw" targetRef="timeout" />',
        '<bpmn:sequenceFlow id="f4" sourceRef="reply" targetRef="handle_reply" />',
        '<bpmn:sequenceFlow id="f5" sourceRef="timeout" targetRef="chase" />',
        '<bpmn:sequenceFlow id="f6" sourceRef="handle_reply" targetRef="end_reply" />',
        '<bpmn:sequenceFlow id="f7" sourceRef="chase" targetRef="end_chase" />',
    ]
    return _document(pid, body, before=[_message("msg", message)])
