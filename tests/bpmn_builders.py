"""Small BPMN documents for tests, written out in full so a reader sees exactly what runs."""

from __future__ import annotations

from xml.sax.saxutils import escape

HEADER = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" '
    'xmlns:camunda="http://camunda.org/schema/1.0/bpmn" '
    'id="defs_{pid}" targetNamespace="http://baton.test">\n'
)


def linear(pid: str, steps: list[str], *, name: str | None = None) -> bytes:
    """start -> steps -> end. A step is ``user:ID``, ``script:ID:SOURCE`` or ``manual:ID``."""
    body, previous = ['<bpmn:startEvent id="start" />'], "start"
    for index, step in enumerate(steps):
        kind, element_id, *rest = step.split(":", 2)
        if kind == "user":
            body.append(f'<bpmn:userTask id="{element_id}" name="{element_id}" />')
        elif kind == "manual":
            body.append(f'<bpmn:manualTask id="{element_id}" name="{element_id}" />')
        elif kind == "script":
            body.append(
                f'<bpmn:scriptTask id="{element_id}" scriptFormat="python">'
                f"<bpmn:script>{escape(rest[0])}</bpmn:script></bpmn:scriptTask>"
            )
        else:
            raise ValueError(kind)
        body.append(f'<bpmn:sequenceFlow id="f{index}" sourceRef="{previous}" targetRef="{element_id}" />')
        previous = element_id
    body.append('<bpmn:endEvent id="end" />')
    body.append(f'<bpmn:sequenceFlow id="f_end" sourceRef="{previous}" targetRef="end" />')
    return _process(pid, name or pid, body)


def _process(pid: str, name: str, body: list[str]) -> bytes:
    xml = (
        HEADER.format(pid=pid)
        + f'<bpmn:process id="{pid}" name="{escape(name)}" isExecutable="true">\n'
        + "\n".join(body)
        + "\n</bpmn:process>\n</bpmn:definitions>\n"
    )
    return xml.encode()


def approval(pid: str = "approval3") -> bytes:
    """The benchmark shape: three user tasks in a row (submit, manager, finance)."""
    return linear(pid, ["user:submit", "user:manager", "user:finance"])


def parallel_users(pid: str = "parallel") -> bytes:
    """A parallel split into two user tasks, joined again."""
    body = [
        '<bpmn:startEvent id="start" />',
        '<bpmn:parallelGateway id="split" />',
        '<bpmn:userTask id="left" name="left" camunda:candidateGroups="legal" />',
        '<bpmn:userTask id="right" name="right" camunda:candidateUsers="alice, bob" camunda:priority="80" />',
        '<bpmn:parallelGateway id="join" />',
        '<bpmn:endEvent id="end" />',
        '<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="split" />',
        '<bpmn:sequenceFlow id="f2" sourceRef="split" targetRef="left" />',
        '<bpmn:sequenceFlow id="f3" sourceRef="split" targetRef="right" />',
        '<bpmn:sequenceFlow id="f4" sourceRef="left" targetRef="join" />',
        '<bpmn:sequenceFlow id="f5" sourceRef="right" targetRef="join" />',
        '<bpmn:sequenceFlow id="f6" sourceRef="join" targetRef="end" />',
    ]
    return _process(pid, pid, body)


def gateway_on(pid: str, condition: str) -> bytes:
    """A user task, then an exclusive gateway whose one conditional flow uses ``condition``."""
    body = [
        '<bpmn:startEvent id="start" />',
        '<bpmn:userTask id="ask" name="ask" />',
        '<bpmn:exclusiveGateway id="gw" default="f_no" />',
        '<bpmn:userTask id="yes" name="yes" />',
        '<bpmn:userTask id="no" name="no" />',
        '<bpmn:endEvent id="end_yes" />',
        '<bpmn:endEvent id="end_no" />',
        '<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="ask" />',
        '<bpmn:sequenceFlow id="f2" sourceRef="ask" targetRef="gw" />',
        f'<bpmn:sequenceFlow id="f_yes" sourceRef="gw" targetRef="yes">'
        f"<bpmn:conditionExpression>{escape(condition)}</bpmn:conditionExpression></bpmn:sequenceFlow>",
        '<bpmn:sequenceFlow id="f_no" sourceRef="gw" targetRef="no" />',
        '<bpmn:sequenceFlow id="f3" sourceRef="yes" targetRef="end_yes" />',
        '<bpmn:sequenceFlow id="f4" sourceRef="no" targetRef="end_no" />',
    ]
    return _process(pid, pid, body)


def boundary_timer(
    pid: str, expression: str, *, interrupting: bool = True, timer: str = "timeDuration"
) -> bytes:
    """A user task ``work`` with a timer boundary event leading to a user task: ``escalated`` when
    interrupting, ``reminder`` (one per firing) when not."""
    cancel = "true" if interrupting else "false"
    target = "escalated" if interrupting else "reminder"
    after = f'<bpmn:userTask id="{target}" name="{target}" />'
    body = [
        '<bpmn:startEvent id="start" />',
        '<bpmn:userTask id="work" name="work" />',
        f'<bpmn:boundaryEvent id="timer" attachedToRef="work" cancelActivity="{cancel}">'
        f"<bpmn:timerEventDefinition><bpmn:{timer}>{escape(expression)}</bpmn:{timer}>"
        "</bpmn:timerEventDefinition></bpmn:boundaryEvent>",
        after,
        '<bpmn:endEvent id="end" />',
        '<bpmn:endEvent id="end_timer" />',
        '<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="work" />',
        '<bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="end" />',
        f'<bpmn:sequenceFlow id="f3" sourceRef="timer" targetRef="{target}" />',
        f'<bpmn:sequenceFlow id="f4" sourceRef="{target}" targetRef="end_timer" />',
    ]
    return _process(pid, pid, body)


def timer_start(pid: str, expression: str, timer: str = "timeCycle") -> bytes:
    """A process started by a timer start event, waiting at user task ``handle``."""
    body = [
        f'<bpmn:startEvent id="tick"><bpmn:timerEventDefinition><bpmn:{timer}>{escape(expression)}'
        f"</bpmn:{timer}></bpmn:timerEventDefinition></bpmn:startEvent>",
        '<bpmn:userTask id="handle" name="handle" />',
        '<bpmn:endEvent id="end" />',
        '<bpmn:sequenceFlow id="f1" sourceRef="tick" targetRef="handle" />',
        '<bpmn:sequenceFlow id="f2" sourceRef="handle" targetRef="end" />',
    ]
    return _process(pid, pid, body)


def intermediate_timer(pid: str, expression: str, timer: str = "timeDate") -> bytes:
    """start -> wait on a timer catch event -> user task ``after``."""
    body = [
        '<bpmn:startEvent id="start" />',
        f'<bpmn:intermediateCatchEvent id="wait"><bpmn:timerEventDefinition><bpmn:{timer}>'
        f"{escape(expression)}</bpmn:{timer}></bpmn:timerEventDefinition></bpmn:intermediateCatchEvent>",
        '<bpmn:userTask id="after" name="after" />',
        '<bpmn:endEvent id="end" />',
        '<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="wait" />',
        '<bpmn:sequenceFlow id="f2" sourceRef="wait" targetRef="after" />',
        '<bpmn:sequenceFlow id="f3" sourceRef="after" targetRef="end" />',
    ]
    return _process(pid, pid, body)


def event_gateway_timer(pid: str, expression: str) -> bytes:
    """An event-based gateway waiting for message ``reply`` or a timer; each leads to a user task."""
    body = [
        '<bpmn:startEvent id="start" />',
        '<bpmn:eventBasedGateway id="gw" />',
        '<bpmn:intermediateCatchEvent id="got_reply"><bpmn:messageEventDefinition messageRef="reply" />'
        "</bpmn:intermediateCatchEvent>",
        f'<bpmn:intermediateCatchEvent id="timeout"><bpmn:timerEventDefinition><bpmn:timeDuration>'
        f"{escape(expression)}</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:intermediateCatchEvent>",
        '<bpmn:userTask id="read_reply" name="read_reply" />',
        '<bpmn:userTask id="chase" name="chase" />',
        '<bpmn:endEvent id="end1" />',
        '<bpmn:endEvent id="end2" />',
        '<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="gw" />',
        '<bpmn:sequenceFlow id="f2" sourceRef="gw" targetRef="got_reply" />',
        '<bpmn:sequenceFlow id="f3" sourceRef="gw" targetRef="timeout" />',
        '<bpmn:sequenceFlow id="f4" sourceRef="got_reply" targetRef="read_reply" />',
        '<bpmn:sequenceFlow id="f5" sourceRef="timeout" targetRef="chase" />',
        '<bpmn:sequenceFlow id="f6" sourceRef="read_reply" targetRef="end1" />',
        '<bpmn:sequenceFlow id="f7" sourceRef="chase" targetRef="end2" />',
    ]
    xml = _process(pid, pid, body).decode()
    return xml.replace(
        "</bpmn:definitions>", '<bpmn:message id="reply" name="reply" />\n</bpmn:definitions>'
    ).encode()


def embedded_subprocess(pid: str = "nested") -> bytes:
    """start -> ``outer`` (user) -> sub-process ``inner`` (user tasks ``a`` then ``b``) -> ``after``
    (user) -> end."""
    body = [
        '<bpmn:startEvent id="start" />',
        '<bpmn:userTask id="outer" name="outer" />',
        '<bpmn:subProcess id="inner" name="inner">'
        '<bpmn:startEvent id="inner_start" />'
        '<bpmn:userTask id="a" name="a" />'
        '<bpmn:userTask id="b" name="b" />'
        '<bpmn:endEvent id="inner_end" />'
        '<bpmn:sequenceFlow id="i1" sourceRef="inner_start" targetRef="a" />'
        '<bpmn:sequenceFlow id="i2" sourceRef="a" targetRef="b" />'
        '<bpmn:sequenceFlow id="i3" sourceRef="b" targetRef="inner_end" />'
        "</bpmn:subProcess>",
        '<bpmn:userTask id="after" name="after" />',
        '<bpmn:endEvent id="end" />',
        '<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="outer" />',
        '<bpmn:sequenceFlow id="f2" sourceRef="outer" targetRef="inner" />',
        '<bpmn:sequenceFlow id="f3" sourceRef="inner" targetRef="after" />',
        '<bpmn:sequenceFlow id="f4" sourceRef="after" targetRef="end" />',
    ]
    return _process(pid, pid, body)
