"""The script sandbox, end to end through real SpiffWorkflow runs (script tasks, gateways, timers, DMN)."""

from __future__ import annotations

import sys
import threading
import time
import types
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException
from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser
from SpiffWorkflow.util.task import TaskState

from engine.scripts import (
    BatonScriptEngine,
    SandboxedEnvironment,
    ScriptError,
    ScriptForbidden,
    ScriptTimeout,
    compile_script,
    validate_script,
)

BPMN = "http://www.omg.org/spec/BPMN/20100524/MODEL"
SPIFF = "http://spiffworkflow.org/bpmn/schema/1.0/core"


def _definitions(pid: str, body: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<bpmn:definitions xmlns:bpmn="{BPMN}" '
        f'xmlns:spiffworkflow="{SPIFF}" id="defs_{pid}" targetNamespace="http://baton.test">'
        f'<bpmn:process id="{pid}" isExecutable="true">{body}</bpmn:process></bpmn:definitions>'
    ).encode()


def script_then_gateway(script: str, condition: str = "amount > 100", pid: str = "p") -> bytes:
    """start -> script task -> exclusive gateway (condition -> 'yes', default -> 'no')."""
    return _definitions(
        pid,
        f"""
        <bpmn:startEvent id="start" />
        <bpmn:scriptTask id="s" name="s"><bpmn:script>{escape(script)}</bpmn:script></bpmn:scriptTask>
        <bpmn:exclusiveGateway id="gw" default="f_no" />
        <bpmn:userTask id="yes" name="yes" />
        <bpmn:userTask id="no" name="no" />
        <bpmn:endEvent id="end_yes" /><bpmn:endEvent id="end_no" />
        <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="s" />
        <bpmn:sequenceFlow id="f2" sourceRef="s" targetRef="gw" />
        <bpmn:sequenceFlow id="f_yes" sourceRef="gw" targetRef="yes">
          <bpmn:conditionExpression>{escape(condition)}</bpmn:conditionExpression>
        </bpmn:sequenceFlow>
        <bpmn:sequenceFlow id="f_no" sourceRef="gw" targetRef="no" />
        <bpmn:sequenceFlow id="f3" sourceRef="yes" targetRef="end_yes" />
        <bpmn:sequenceFlow id="f4" sourceRef="no" targetRef="end_no" />
        """,
    )


def timer_process(expression: str, pid: str = "t") -> bytes:
    return _definitions(
        pid,
        f"""
        <bpmn:startEvent id="start" />
        <bpmn:intermediateCatchEvent id="wait">
          <bpmn:timerEventDefinition>
            <bpmn:timeDuration>{escape(expression)}</bpmn:timeDuration>
          </bpmn:timerEventDefinition>
        </bpmn:intermediateCatchEvent>
        <bpmn:userTask id="after" name="after" />
        <bpmn:endEvent id="end" />
        <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="wait" />
        <bpmn:sequenceFlow id="f2" sourceRef="wait" targetRef="after" />
        <bpmn:sequenceFlow id="f3" sourceRef="after" targetRef="end" />
        """,
    )


def run(
    xml: bytes, pid: str, *, engine: BatonScriptEngine | None = None, data: dict | None = None
) -> BpmnWorkflow:
    parser = SpiffBpmnParser()
    parser.add_bpmn_str(xml, f"{pid}.bpmn")
    wf = BpmnWorkflow(parser.get_spec(pid), script_engine=engine or BatonScriptEngine(timeout=2.0))
    if data:
        wf.get_tasks(state=TaskState.READY)[0].data.update(data)  # the start event's data flows on
    wf.do_engine_steps()
    return wf


def ready_ids(wf: BpmnWorkflow) -> list[str]:
    return [t.task_spec.name for t in wf.get_tasks(state=TaskState.READY)]


def data_of(wf: BpmnWorkflow) -> dict:
    return wf.get_tasks(state=TaskState.READY)[0].data


# --------------------------------------------------------------------------------------------------------
# Normal scripts and gateways


NORMAL_SCRIPT = """\
order = {'lines': [{'sku': 'a', 'qty': 2, 'price': 30}, {'sku': 'b', 'qty': 1, 'price': 50}]}
order['customer'] = 'ACME'
order['lines'].append({'sku': 'c', 'qty': 1, 'price': 1})
amount = 0
for line in order['lines']:
    amount += line['qty'] * line['price']
skus = [line['sku'] for line in order['lines'] if line['qty'] > 0]
by_sku = {line['sku']: line['qty'] for line in order['lines']}
counts = {}
counts['x'] = 1
counts['x'] += 41
n = 0
while n < 5:
    n += 1
label = f"{order['customer']}: {amount:,.2f} ({len(skus)} lines)"
due = (datetime(2024, 1, 31) + timedelta(days=2)).date().isoformat()
weekday = date(2024, 2, 2).weekday()
vat = str((Decimal('111') * Decimal('0.2')).quantize(Decimal('0.01')))
top = max(order['lines'], key=lambda line: line['price'])['sku']
ordered = sorted(skus, reverse=True)
def double(v):
    return v * 2
doubled = double(21)
try:
    int('not a number')
except ValueError:
    parsed = None
a, (b, c) = 1, (2, 3)
payload = json_loads(json_dumps({'when': datetime(2024, 1, 1), 'total': Decimal('1.5')}))
print('debug output is discarded')
"""


class TestNormalScripts:
    def test_script_task_computes_and_gateway_routes(self):
        wf = run(script_then_gateway(NORMAL_SCRIPT), "p")
        assert ready_ids(wf) == ["yes"]  # amount = 111 > 100
        data = data_of(wf)
        assert data["amount"] == 111
        assert data["order"]["customer"] == "ACME" and len(data["order"]["lines"]) == 3
        assert data["skus"] == ["a", "b", "c"] and data["by_sku"] == {"a": 2, "b": 1, "c": 1}
        assert data["counts"] == {"x": 42} and data["n"] == 5
        assert data["label"] == "ACME: 111.00 (3 lines)"
        assert data["due"] == "2024-02-02" and data["weekday"] == 4 and data["vat"] == "22.20"
        assert data["top"] == "b" and data["ordered"] == ["c", "b", "a"] and data["doubled"] == 42
        assert data["parsed"] is None and (data["a"], data["b"], data["c"]) == (1, 2, 3)
        assert data["payload"] == {"when": "2024-01-01 00:00:00", "total": "1.5"}

    def test_default_flow_when_condition_is_false(self):
        wf = run(script_then_gateway("amount = 5"), "p")
        assert ready_ids(wf) == ["no"]

    def test_condition_reads_task_data_from_a_form(self):
        wf = run(script_then_gateway("pass", "region == 'EU' and amount >= 100"), "p",
                 data={"amount": 100, "region": "EU"})  # fmt: skip
        assert ready_ids(wf) == ["yes"]

    def test_injected_helpers_and_functions_do_not_leak_into_task_data(self):
        engine = BatonScriptEngine(functions={"business_days": lambda n: n * 2})
        wf = run(
            script_then_gateway("amount = business_days(60)\ndef helper():\n    return 1"), "p", engine=engine
        )
        assert ready_ids(wf) == ["yes"]
        data = data_of(wf)
        assert data == {"amount": 120}  # no __builtins__, guards, functions or script-defined callables
        assert not any(k.startswith("_") for k in data)

    def test_task_data_may_shadow_helper_names(self):
        """A form field called ``date`` is ordinary data, not a clash with the ``date`` helper."""
        wf = run(
            script_then_gateway("amount = 200 if date == '2024-01-01' else 0"),
            "p",
            data={"date": "2024-01-01"},
        )
        assert ready_ids(wf) == ["yes"]

    def test_print_is_accepted_and_discarded(self):
        env = SandboxedEnvironment()
        data: dict = {}
        env.execute("print('a', 1)\nout = printed", data)
        assert data == {"out": ""}

    def test_previous_trace_function_is_untouched(self):
        calls: list[str] = []

        def tracer(frame, event, arg):
            calls.append(event)
            return None

        previous = sys.gettrace()
        sys.settrace(tracer)
        try:
            SandboxedEnvironment().execute("x = sum(i for i in range(10))", {})
            assert sys.gettrace() is tracer
        finally:
            sys.settrace(previous)
        assert calls  # the tracer kept receiving events while the script ran


# --------------------------------------------------------------------------------------------------------
# Hostile scripts


HOSTILE = {
    "import": ("import os\nos.system('touch {marker}')", "import statements are not allowed"),
    "from_import": ("from os import system\nsystem('touch {marker}')", "import statements are not allowed"),
    "dunder_import": (
        "__import__('os').system('touch {marker}')",
        '"__import__" is an invalid variable name',
    ),
    "open_write": ("open('{marker}', 'w').write('x')", '"open" is not available'),
    "open_read": ("secret = open('/etc/passwd').read()", '"open" is not available'),
    "subclasses": ("x = ().__class__.__base__.__subclasses__()", '"__class__" is an invalid attribute'),
    "getattr_literal": ("x = getattr((), '__class__')", 'access to attribute "__class__"'),
    "eval": ("eval(\"open('{marker}', 'w')\")", "Eval calls are not allowed"),
    "exec": ("exec(\"open('{marker}', 'w')\")", "Exec calls are not allowed"),
    "compile": ("c = compile('1', 'f', 'eval')", '"compile" is not available'),
    "globals": ("g = globals()", '"globals" is not available'),
    "builtins": ("b = __builtins__", '"__builtins__" is an invalid variable name'),
    "format": ("x = '{{0.__class__}}'.format(1)", 'access to attribute "format"'),
    "format_map": ("x = '{{a.__class__}}'.format_map({{'a': 1}})", 'access to attribute "format_map"'),
    "class": ("class A:\n    pass", "class definitions are not allowed"),
    "gi_frame": ("g = (i for i in [1])\nf = g.gi_frame", '"gi_frame" is a restricted name'),
    "mro": ("m = (1).mro()", 'access to attribute "mro"'),
}


class TestHostileScripts:
    @pytest.mark.parametrize("name", sorted(HOSTILE))
    def test_refused_in_a_script_task_and_nothing_written(self, tmp_path: Path, name: str):
        marker = tmp_path / "pwned"
        source, reason = HOSTILE[name]
        source = source.format(marker=marker)
        with pytest.raises(WorkflowTaskException) as info:
            run(script_then_gateway(source), "p")
        assert "Script refused" in str(info.value) and reason in str(info.value)
        assert info.value.error_type == "ScriptForbidden"
        assert not marker.exists()
        # The BPMN linter sees the same refusal at upload time.
        assert reason in (validate_script(source, mode="exec") or "")

    def test_runtime_getattr_with_a_computed_name_is_refused(self, tmp_path: Path):
        source = "name = '__cla' + 'ss__'\nx = getattr((), name)"
        assert validate_script(source, mode="exec") is None  # cannot be seen at compile time ...
        with pytest.raises(WorkflowTaskException, match='access to attribute "__class__" is not allowed'):
            run(script_then_gateway(source), "p")  # ... so the guard refuses it at run time

    def test_attribute_writes_outside_task_data_are_refused(self):
        with pytest.raises(WorkflowTaskException, match="attribute-less object"):
            run(script_then_gateway("d = datetime(2024, 1, 1)\nd.year = 1"), "p")
        with pytest.raises(WorkflowTaskException):
            run(script_then_gateway("timedelta.days = 1"), "p")

    def test_condition_using_import_fails(self):
        with pytest.raises(WorkflowTaskException, match="Script refused") as info:
            run(script_then_gateway("amount = 500", "__import__('os') is None"), "p")
        assert "Error evaluating expression" in str(info.value)

    def test_condition_is_sandboxed_at_run_time_too(self):
        with pytest.raises(WorkflowTaskException, match='access to attribute "__globals__"'):
            run(script_then_gateway("amount = 500", "getattr(len, '__glo' + 'bals__') is None"), "p")

    @pytest.mark.parametrize(
        "source",
        ["x = 'a' * 10**9", "x = [0] * 10**9", "x = 2 ** 10**9", "x = 1 << 10**9", "x = pow(10, 10**8)",
         "x = '%0999999999d' % 1", "x = 'a'.ljust(10**9)", "x = 7\nx **= 10**9"],
    )  # fmt: skip
    def test_memory_bombs_are_refused(self, source: str):
        with pytest.raises(WorkflowTaskException, match="sandbox size limit|width/precision"):
            run(script_then_gateway(source), "p")

    @pytest.mark.parametrize(
        "source",
        [
            "x = [0]\nfor i in range(40):\n    x = [x, x]",  # 2**40 values for the serializer
            "x = []\nx.append(x)",  # self-reference
            "x = [0]\nfor i in range(40):\n    x = [x, x]\ns = json_dumps(x)",
        ],
    )
    def test_task_data_the_serializer_could_not_handle_is_refused(self, source: str):
        with pytest.raises(WorkflowTaskException, match="task data would exceed"):
            run(script_then_gateway(source), "p")

    def test_condition_that_mutates_task_data_is_size_checked(self):
        with pytest.raises(WorkflowTaskException, match="task data would exceed"):
            run(script_then_gateway("items = []", "items.append(items) or True"), "p")

    def test_huge_literal_format_width_is_refused_at_compile_time(self):
        assert "below 10000" in validate_script("f'{1:>999999999}'", mode="eval")
        assert "must be literal" in validate_script("f'{1:>{n}}'", mode="eval")
        assert validate_script("f'{amount:,.2f}'", mode="eval") is None

    def test_no_module_is_reachable_from_what_scripts_get(self):
        """Walk public attributes of every builtin a script sees (and a few instances) for modules."""
        env = SandboxedEnvironment(functions={"helper": lambda: 1})
        start = dict(env.globals["__builtins__"])
        start.update(now=datetime.now(), dec=Decimal("1.5"), err=ValueError("x"), lazy=map(str, [1]))
        seen: set[int] = set()
        frontier = list(start.items())
        for _ in range(4):
            following = []
            for path, obj in frontier:
                if id(obj) in seen:
                    continue
                seen.add(id(obj))
                assert not isinstance(obj, (types.ModuleType, types.FrameType, types.CodeType)), path
                assert obj is not type and obj is not object, path
                for attr in dir(obj):
                    if (
                        attr.startswith("_")
                        or attr in ("format", "format_map", "mro")
                        or attr.startswith("gi_")
                    ):
                        continue
                    try:
                        following.append((f"{path}.{attr}", getattr(obj, attr)))
                    except Exception:
                        continue
            frontier = following
        assert len(seen) > 300


# --------------------------------------------------------------------------------------------------------
# Time limit


ENDLESS = {
    "while": "while True: pass",
    "while_multiline": "n = 0\nwhile True:\n    n += 1",
    "huge_range": "for i in range(10**12): pass",
    "comprehension": "x = [i for i in range(10**12)]",
    "builtin_c_loop": "x = sum(range(10**12))",
    "nested_c_loops": "x = sum(map(sum, [range(10**6)] * 10**6))",
    "catches_the_timeout": "while True:\n try:\n  while True: pass\n except Exception:\n  pass",
    "swallows_in_finally": "while True:\n try:\n  while True: pass\n finally:\n  continue",
    "recursion_with_except": (
        "def f(n):\n try:\n  return f(n + 1) + f(n + 1)\n"
        " except RecursionError:\n  return f(n) if n else 0\nf(0)"
    ),
    "sum_concatenation": "parts = [[0] * 10**5] * 10**5\nx = sum(parts, [])",
    "sort_key": "data = [0] * 20000\nother = list(range(20000))\ndata.sort(key=other.count)",
}


class TestTimeLimit:
    @pytest.mark.parametrize("name", sorted(ENDLESS))
    def test_endless_script_is_stopped(self, name: str):
        began = time.monotonic()
        with pytest.raises(WorkflowTaskException, match=r"Script exceeded its time limit of 0\.5 s") as info:
            run(script_then_gateway(ENDLESS[name]), "p", engine=BatonScriptEngine(timeout=0.5))
        elapsed = time.monotonic() - began
        assert 0.45 < elapsed < 3.0, elapsed
        assert info.value.error_type == "ScriptTimeout"

    def test_stopped_in_a_non_main_thread(self):
        outcome: dict = {}

        def work() -> None:
            began = time.monotonic()
            try:
                run(script_then_gateway("while True: pass"), "p", engine=BatonScriptEngine(timeout=0.5))
            except WorkflowTaskException as exc:
                outcome["error"] = exc
            outcome["elapsed"] = time.monotonic() - began

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        worker.join(10)
        assert not worker.is_alive()
        assert "time limit of 0.5 s" in str(outcome["error"]) and outcome["elapsed"] < 3.0

    def test_each_thread_has_its_own_deadline(self):
        """A slow script in one thread does not cut short a fast one in another."""
        results: dict[str, object] = {}

        def slow() -> None:
            try:
                SandboxedEnvironment(timeout=0.5).execute("while True: pass", {})
            except ScriptTimeout as exc:
                results["slow"] = exc

        def fast() -> None:
            data: dict = {}
            for _ in range(200):
                SandboxedEnvironment(timeout=5).execute("total = sum(i for i in range(1000))", data)
            results["fast"] = data["total"]

        threads = [threading.Thread(target=slow), threading.Thread(target=fast)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert isinstance(results["slow"], ScriptTimeout) and results["fast"] == 499500

    def test_condition_loop_is_stopped(self):
        with pytest.raises(WorkflowTaskException, match="time limit"):
            run(script_then_gateway("amount = 1", "any(True for i in range(10**12) if i < 0)"), "p",
                engine=BatonScriptEngine(timeout=0.5))  # fmt: skip

    def test_bounded_work_within_the_limit_is_fine(self):
        wf = run(
            script_then_gateway("amount = sum(range(200000)) // 1000"),
            "p",
            engine=BatonScriptEngine(timeout=0.5),
        )
        assert data_of(wf)["amount"] == 19999900


# --------------------------------------------------------------------------------------------------------
# Timers, DMN and services also go through the sandbox


class TestOtherExpressions:
    def test_timer_expression_evaluated_through_the_sandbox(self):
        engine = BatonScriptEngine(functions={"sla": lambda: "PT1H"})
        wf = run(timer_process("sla()"), "t", engine=engine)  # `sla` only exists in the sandbox
        waiting = wf.get_tasks(state=TaskState.WAITING)
        assert [t.task_spec.name for t in waiting] == ["wait"]
        due = datetime.fromisoformat(waiting[0].internal_data["event_value"])
        assert 3500 < (due - datetime.now(due.tzinfo)).total_seconds() <= 3600

    def test_hostile_timer_expression_is_refused(self, tmp_path: Path):
        marker = tmp_path / "pwned"
        with pytest.raises(WorkflowTaskException, match="Script refused"):
            run(timer_process(f"__import__('os').system('touch {marker}') or 'PT1S'"), "t")
        assert not marker.exists()

    def test_dmn_cells_are_sandboxed(self):
        dmn = f"""<?xml version="1.0" encoding="UTF-8"?>
<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" id="d" name="d" namespace="x">
  <decision id="route" name="route">
    <decisionTable id="table" hitPolicy="FIRST">
      <input id="in1">
        <inputExpression id="ie1" typeRef="integer"><text>amount</text></inputExpression>
      </input>
      <output id="out1" name="approver" typeRef="string" />
      <rule id="r1">
        <inputEntry id="e1"><text>{escape("{cell}")}</text></inputEntry>
        <outputEntry id="o1"><text>"cfo"</text></outputEntry>
      </rule>
      <rule id="r2">
        <inputEntry id="e2"><text>-</text></inputEntry>
        <outputEntry id="o2"><text>"manager"</text></outputEntry>
      </rule>
    </decisionTable>
  </decision>
</definitions>"""
        bpmn = _definitions(
            "d",
            """
            <bpmn:startEvent id="start" />
            <bpmn:businessRuleTask id="rules">
              <bpmn:extensionElements>
                <spiffworkflow:calledDecisionId>route</spiffworkflow:calledDecisionId>
              </bpmn:extensionElements>
            </bpmn:businessRuleTask>
            <bpmn:userTask id="after" />
            <bpmn:endEvent id="end" />
            <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="rules" />
            <bpmn:sequenceFlow id="f2" sourceRef="rules" targetRef="after" />
            <bpmn:sequenceFlow id="f3" sourceRef="after" targetRef="end" />
            """,
        )

        def decide(cell: str, amount: int) -> BpmnWorkflow:
            parser = SpiffBpmnParser()
            parser.add_bpmn_str(bpmn, "d.bpmn")
            parser.add_dmn_str(dmn.replace("{cell}", escape(cell)).encode(), "d.dmn")
            wf = BpmnWorkflow(parser.get_spec("d"), script_engine=BatonScriptEngine(timeout=1.0))
            wf.get_tasks(state=TaskState.READY)[0].data["amount"] = amount
            wf.do_engine_steps()
            return wf

        assert data_of(decide("> 1000", 5000))["approver"] == "cfo"
        assert data_of(decide("> 1000", 10))["approver"] == "manager"
        with pytest.raises(WorkflowTaskException, match="Script refused"):
            decide("? == __import__('os').getpid()", 10)

    def test_service_task_without_connector_fails_clearly(self):
        env = SandboxedEnvironment()
        with pytest.raises(ScriptError, match="no service connector is configured"):
            env.call_service({}, operation_name="crm/lookup", operation_params={})

    def test_service_connector_is_called(self):
        calls = []

        def services(name, params, data):
            calls.append((name, params, dict(data)))
            return '{"ok": true}'

        env = SandboxedEnvironment(services=services)
        assert (
            env.call_service({"a": 1}, operation_name="crm/lookup", operation_params={"id": 1})
            == '{"ok": true}'
        )
        assert calls == [("crm/lookup", {"id": 1}, {"a": 1})]


# --------------------------------------------------------------------------------------------------------
# Compilation cache and API details


class TestCompilationAndApi:
    def test_same_source_is_compiled_once(self):
        condition = f"amount > 100 and {time.monotonic_ns()} > 0"  # unique: not yet in the cache
        before = compile_script.cache_info()
        run(script_then_gateway("amount = 500", condition), "p")
        run(script_then_gateway("amount = 5", condition), "p")
        after = compile_script.cache_info()
        assert after.misses - before.misses >= 1  # the first evaluation compiled it ...
        assert after.hits - before.hits >= 1  # ... the second one reused it
        assert compile_script(condition, "eval") is compile_script(condition, "eval")

    def test_validate_script(self):
        assert validate_script("total = amount * 2", mode="exec") is None
        assert validate_script("amount > 100", mode="eval") is None
        assert validate_script("  amount > 100", mode="eval") is None  # eval() strips leading blanks too
        assert validate_script("x = = 1", mode="exec").startswith("Line 1: SyntaxError")
        assert (
            validate_script("import os", mode="exec")
            == "Script refused: Line 1: import statements are not allowed"
        )
        assert validate_script("x = 1", mode="eval").startswith("Line 1: SyntaxError")

    def test_refusals_are_script_forbidden(self):
        with pytest.raises(ScriptForbidden, match="import statements"):
            SandboxedEnvironment().execute("import os", {})
        assert issubclass(ScriptForbidden, ScriptError) and issubclass(ScriptTimeout, ScriptError)

    def test_script_errors_keep_their_meaning(self):
        with pytest.raises(WorkflowTaskException, match="KeyError: 1") as info:
            run(script_then_gateway("d = {}\nx = d[1]"), "p")  # upstream crashes formatting this one
        assert info.value.line_number == 2
        with pytest.raises(WorkflowTaskException, match="NameError"):
            run(script_then_gateway("x = undefined_thing"), "p")

    def test_engine_options_are_checked(self):
        with pytest.raises(ValueError):
            BatonScriptEngine(timeout=0)
        with pytest.raises(ValueError, match="never a module"):
            BatonScriptEngine(functions={"os": sys})
        with pytest.raises(ValueError, match="identifier"):
            BatonScriptEngine(functions={"_hidden": len})
        assert BatonScriptEngine(timeout=0.25).timeout == 0.25
