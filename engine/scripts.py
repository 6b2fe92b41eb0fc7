"""Sandboxed Python for everything a BPMN/DMN file carries.

SpiffWorkflow 3.2.0 sends every piece of embedded Python (script tasks, pre/post scripts, gateway and
conditional-event conditions, timer expressions, multi-instance cardinality/completion conditions, DMN
input/output cells, message correlation expressions, service-task parameters, process completion
conditions) through ``PythonScriptEngine.environment.evaluate/execute``; by default that is plain
``eval``/``exec`` with full builtins, so an uploaded diagram could read files and run commands.
``SandboxedEnvironment`` replaces both with RestrictedPython:

* Compile time (``ScriptForbidden``): RestrictedPython's policy (no names or attributes starting with
  ``_``, no ``eval``/``exec``, no frame/code/generator internals) plus ours: no ``import``, no ``class``,
  no ``with``, no ``yield``, no calls to ``open``/``compile``/``globals``/``vars``/..., no
  ``getattr(x, '_...')`` with a literal name, no dynamic or huge f-string format specs.
* Run time: ``_getattr_`` refuses underscore names, frame/code internals, ``str.format``/``format_map``
  (``'{0.__class__}'.format(x)``) and ``mro``; writes are only allowed into plain dicts/lists (task data);
  builtins are a short vetted list. NO module is exposed (``re.enum.sys.modules['os']`` escapes), only
  functions and value classes: ``datetime``, ``date``, ``timedelta``, ``timezone``, ``Decimal``,
  ``json_dumps``, ``json_loads``, ``floor``, ``ceil`` and the engine's own ``functions``. These live in
  ``__builtins__``, so a task-data variable of the same name (e.g. ``date``) simply shadows them.
* Time limit (``ScriptTimeout``, default 2.0 s per script/expression): the compiler injects a deadline
  check (``_tick_()``) at the top of every loop body, function and lambda body, comprehension step,
  ``except`` handler and ``finally`` block. Why not ``sys.settrace``: on CPython 3.11 ``while True: pass``
  compiles to a jump onto itself that emits a single 'line' event, so a tracer never sees it spin; and
  CPython uninstalls a tracer that raises, so a script that catches the timeout would continue untraced.
  The injected checks work in any thread (Flask serves requests in threads, so no ``signal.alarm``),
  cost ~0.1-0.2 µs per loop iteration, leave debuggers/coverage alone, and cannot be swallowed: after the
  deadline every handler re-raises on its first statement. ``map``/``filter`` and the ``key=`` of
  ``sorted``/``min``/``max``/``list.sort`` check the deadline per item, and ``range()`` longer than
  ``MAX_RANGE`` is lazy and checked, so builtin C loops cannot be chained into an unbounded one.
  A script that returns after its deadline (e.g. one slow C-level call) still fails with the timeout.
* Memory bombs refused where it is cheap (``ScriptError``): ``*`` (sequence repetition, big-int products),
  ``**``/``pow()``, ``<<``, ``%``-formatting and f-string widths/precisions over 4 digits,
  ``str.ljust/rjust/center/zfill`` widths, all bounded by ``MAX_SEQUENCE_LEN``/``MAX_INT_BITS``.
* Task data is walked after every script (and after expressions that call methods): more than
  ``MAX_DATA_ITEMS`` values, counting a shared sub-structure each time it is referenced, or a
  self-reference fails the script, because the serializer would expand it later outside any limit.

Known limits (documented, not closed):

* Memory is not capped. Growth over many cheap steps (``s = s + s`` or ``s.replace('a', 'aa')`` in a
  loop, ``str.join``, ``list.extend(l)``) can allocate a few GB before the deadline; run workers under a
  memory limit (cgroup / ``RLIMIT_AS``).
* The deadline is checked between Python-level steps: one C-level call on large data can overrun it
  (e.g. ``int(Decimal('1e999999'))``, ``f"{Decimal('1e999999'):f}"``, ``list.count`` on a 10**7 list);
  the script then fails, but only after that call returns. Hard isolation needs a subprocess worker.
* The deadline is NOT enforced inside a single C-level call. Worst case: a structure of shared references
  (``x = [0]`` then ``x = [x, x]`` 40 times: cheap to build) handed to ``str``/``repr``/an f-string or
  compared with ``==`` makes CPython walk 2**40 nodes in one call; the thread is stuck until it ends.
  Only a separate process that can be killed closes this: run untrusted tenants' scripts that way.
* ``print`` is accepted and discarded (``printed`` is always '').
* SpiffWorkflow's own serializer migration for pre-1.2 JSON (``bpmn/serializer/migration/version_1_2``)
  still calls builtin ``eval`` on timer expressions it finds in OLD serialized workflows: never
  deserialize workflow JSON from an untrusted source.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import operator
import re
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal, NamedTuple

from RestrictedPython import compile_restricted_eval, compile_restricted_exec
from RestrictedPython.Eval import default_guarded_getitem, default_guarded_getiter
from RestrictedPython.Guards import (
    full_write_guard,
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safe_builtins,
)
from RestrictedPython.transformer import (
    INSPECT_ATTRIBUTES,
    IOPERATOR_TO_STR,
    RestrictingNodeTransformer,
    copy_locations,
)
from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine, TaskDataEnvironment
from SpiffWorkflow.exceptions import SpiffWorkflowException

__all__ = [
    "MAX_DATA_ITEMS",
    "MAX_INT_BITS",
    "MAX_RANGE",
    "MAX_SEQUENCE_LEN",
    "BatonScriptEngine",
    "CompiledScript",
    "SandboxedEnvironment",
    "ScriptError",
    "ScriptForbidden",
    "ScriptTimeout",
    "compile_script",
    "json_dumps",
    "json_loads",
    "validate_script",
]

MAX_INT_BITS = 100_000  # ~30,000 decimal digits: far beyond any business number, cheap to compute
MAX_SEQUENCE_LEN = 10_000_000  # items/characters one operation may create
MAX_RANGE = 1_000_000  # longer range() objects become lazy, deadline-checked iterators
MAX_FORMAT_DIGITS = 4  # f-string / %-format widths and precisions up to 9999
MAX_DATA_ITEMS = 1_000_000  # container entries (+ 1 per 64 characters) task data may hold after a script
SCRIPT_FILENAME = "<string>"  # SpiffWorkflow looks for this name to report the failing line


class ScriptError(Exception):
    """A script was refused or stopped by the sandbox."""


class ScriptTimeout(ScriptError):
    """A script ran past its time limit."""


class ScriptForbidden(ScriptError):
    """A script uses something the sandbox does not allow (mostly refused at compile time)."""


# ---------------------------------------------------------------------------------------------------------
# Deadline: one per thread, set around each run, checked by the code the compiler injects.


class _RunState(threading.local):
    deadline: float = float("-inf")  # outside a run, sandboxed code (a leaked lambda) cannot run at all
    limit: float = 0.0


_state = _RunState()
_monotonic = time.monotonic


def _timeout_message(limit: float) -> str:
    return f"Script exceeded its time limit of {limit} s"


def _tick_() -> None:
    """Injected at every loop step, call, handler: raise once the current run's deadline has passed."""
    if _monotonic() > _state.deadline:
        raise ScriptTimeout(_timeout_message(_state.limit))


def _ticking(iterable: Iterable[Any], mask: int) -> Iterator[Any]:
    """Yield from ``iterable``, checking the deadline every ``mask + 1`` items."""
    n = 0
    for item in iterable:
        n += 1
        if not n & mask:
            _tick_()
        yield item


def _ticking_key(key: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """A sort key that checks the deadline on each call (``key=other_list.count`` is quadratic C)."""
    if key is None:
        return None

    def checked(item: Any) -> Any:
        _tick_()
        return key(item)

    return checked


# ---------------------------------------------------------------------------------------------------------
# Guarded operators and builtins (memory bombs, C-level loops).

_SEQUENCES = (str, bytes, list, tuple)
_BIG = rf"(?:\*|\d{{{MAX_FORMAT_DIGITS + 1},}})"  # a '*' width or a number of 5+ digits
_PRINTF_BIG = re.compile(rf"%(?:\([^)]*\))?[-#0 +]*(?:{_BIG}|\d*\.{_BIG})")


def _refuse_size(what: str) -> ScriptError:
    return ScriptError(f"Script refused: {what} would exceed the sandbox size limit")


def _check_repeat(seq: Any, times: Any) -> None:
    if isinstance(times, int) and len(seq) * times > MAX_SEQUENCE_LEN:
        raise _refuse_size("sequence repetition")


def _mul_(a: Any, b: Any) -> Any:
    """``a * b`` without giant repetitions or big-int products."""
    ta, tb = type(a), type(b)
    if ta is float or tb is float:
        return a * b
    if isinstance(a, int) and isinstance(b, int):
        if a.bit_length() + b.bit_length() > MAX_INT_BITS:
            raise _refuse_size("integer multiplication")
    elif isinstance(a, _SEQUENCES):
        _check_repeat(a, b)
    elif isinstance(b, _SEQUENCES):
        _check_repeat(b, a)
    return a * b


def _pow_(base: Any, exp: Any, mod: Any = None) -> Any:
    """``base ** exp`` / ``pow()`` without results of millions of digits (modular pow is cheap)."""
    if mod is None and isinstance(base, int) and isinstance(exp, int) and exp > 0 and abs(base) > 1:
        if exp > MAX_INT_BITS or (abs(base).bit_length() - 1) * exp > MAX_INT_BITS:
            raise _refuse_size("exponentiation")
    return pow(base, exp) if mod is None else pow(base, exp, mod)


def _lshift_(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int) and a and a.bit_length() + b > MAX_INT_BITS:
        raise _refuse_size("left shift")
    return a << b


def _mod_(a: Any, b: Any) -> Any:
    """``a % b``; refuses %-format specs with huge widths ('%0999999999d' is a 1 GB string)."""
    if isinstance(a, (str, bytes)):
        fmt = a if isinstance(a, str) else a.decode("latin-1")
        if _PRINTF_BIG.search(fmt.replace("%%", "")):
            raise ScriptError("Script refused: %-format width/precision must be a literal below 10000")
    return a % b


_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd,
    "-=": operator.isub,
    "*=": lambda a, b: operator.imul(a, b) if type(a) is list else _mul_(a, b),
    "/=": operator.itruediv,
    "//=": operator.ifloordiv,
    "%=": _mod_,
    "**=": _pow_,
    "<<=": _lshift_,
    ">>=": operator.irshift,
    "|=": operator.ior,
    "^=": operator.ixor,
    "&=": operator.iand,
}


def _inplacevar_(op: str, target: Any, value: Any) -> Any:
    if op == "*=" and type(target) is list:
        _check_repeat(target, value)
    try:
        fn = _INPLACE[op]
    except KeyError:
        raise ScriptForbidden(f"Script refused: operator {op} is not allowed") from None
    return fn(target, value)


def _augitem_(obj: Any, key: Any, op: str, value: Any) -> None:
    """``obj[key] op= value`` (RestrictedPython refuses it; task data does it all the time)."""
    full_write_guard(obj)[key] = _inplacevar_(op, obj[key], value)


def _apply_(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


class _DiscardPrint:
    """``print`` in a script is accepted and discarded: scripts have no console; nothing accumulates."""

    def __init__(self, _getattr: Any = None) -> None:
        pass

    def _call_print(self, *objects: Any, **kwargs: Any) -> None:
        pass

    def __call__(self) -> str:
        return ""


_EXTRA_BLOCKED_ATTRS = frozenset({"format", "format_map", "mro", "expandtabs"})  # format: '{0.__class__}'
_BLOCKED_ATTRS = INSPECT_ATTRIBUTES | _EXTRA_BLOCKED_ATTRS
_WIDTH_METHODS = frozenset({"ljust", "rjust", "center", "zfill"})


def _sized_method(method: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and value > MAX_SEQUENCE_LEN:
                raise _refuse_size("string padding")
        return method(*args, **kwargs)

    return call


def _sort_method(method: Callable[..., Any]) -> Callable[..., Any]:
    def call(*, key: Callable[[Any], Any] | None = None, reverse: bool = False) -> None:
        return method(key=_ticking_key(key), reverse=reverse)

    return call


def _getattr_(obj: Any, name: str, *default: Any) -> Any:
    """Attribute access from scripts (``x.y`` and ``getattr``): public, non-introspective names only."""
    if type(name) is not str:
        raise TypeError("attribute name must be a string")
    if name[:1] == "_" or name in _BLOCKED_ATTRS:
        raise ScriptForbidden(f'Script refused: access to attribute "{name}" is not allowed')
    value = getattr(obj, name, *default)
    if name in _WIDTH_METHODS and (isinstance(obj, (str, bytes)) or obj is str or obj is bytes):
        return _sized_method(value)
    if name == "sort" and type(obj) is list:
        return _sort_method(value)
    return value


def _hasattr(obj: Any, name: str) -> bool:
    try:
        _getattr_(obj, name)
    except AttributeError:
        return False
    return True


def _range(*args: int) -> Any:
    r = range(*args)
    try:
        small = len(r) <= MAX_RANGE
    except OverflowError:
        small = False
    return r if small else _ticking(r, 1023)


def _map(func: Callable[..., Any], *iterables: Iterable[Any]) -> Iterator[Any]:
    return _ticking(map(func, *iterables), 0)


def _filter(func: Callable[[Any], Any] | None, iterable: Iterable[Any]) -> Iterator[Any]:
    return _ticking(filter(func, iterable), 0)


def _sorted(
    iterable: Iterable[Any], *, key: Callable[[Any], Any] | None = None, reverse: bool = False
) -> Any:
    return sorted(iterable, key=_ticking_key(key), reverse=reverse)


def _sum(iterable: Iterable[Any], start: Any = 0) -> Any:
    if isinstance(start, (list, tuple, str, bytes)):  # concatenation: quadratic copying in one C call
        iterable = _ticking(iterable, 0)
    return sum(iterable, start)


def _min(*args: Any, **kwargs: Any) -> Any:
    if kwargs.get("key") is not None:
        kwargs["key"] = _ticking_key(kwargs["key"])
    return min(*args, **kwargs)


def _max(*args: Any, **kwargs: Any) -> Any:
    if kwargs.get("key") is not None:
        kwargs["key"] = _ticking_key(kwargs["key"])
    return max(*args, **kwargs)


def json_dumps(value: Any, *, sort_keys: bool = False) -> str:
    """JSON text of ``value``; dates and decimals become strings (no ``cls=``/``indent=`` knobs)."""
    _check_data_size({"value": value})  # shared sub-structures would be expanded in one C call
    return json.dumps(value, sort_keys=bool(sort_keys), default=str)


def json_loads(text: str | bytes) -> Any:
    return json.loads(text)


_REMOVED_BUILTINS = {
    "__build_class__",  # class statements are refused
    "setattr",
    "delattr",  # scripts never need attribute writes
    "BaseException",
    "SystemExit",
    "KeyboardInterrupt",
    "GeneratorExit",  # would slip past `except Exception` in SpiffWorkflow and the web layer
}
_BASE_BUILTINS: dict[str, Any] = {k: v for k, v in safe_builtins.items() if k not in _REMOVED_BUILTINS}
_BASE_BUILTINS.update(
    {
        # plain builtins that only consume what the script already has
        "len": len, "sum": _sum, "any": any, "all": all, "enumerate": enumerate, "zip": zip,
        "reversed": reversed, "dict": dict, "list": list, "set": set, "frozenset": frozenset,
        "tuple": tuple, "bin": bin, "divmod": divmod, "abs": abs, "round": round,
        "RecursionError": RecursionError, "StopIteration": StopIteration,
        # guarded replacements
        "pow": _pow_, "range": _range, "map": _map, "filter": _filter, "sorted": _sorted,
        "min": _min, "max": _max, "getattr": _getattr_, "hasattr": _hasattr,
        # vetted helpers: value classes and functions, never modules
        "datetime": datetime, "date": date, "timedelta": timedelta, "timezone": timezone,
        "Decimal": Decimal, "json_dumps": json_dumps, "json_loads": json_loads,
        "floor": math.floor, "ceil": math.ceil,
    }
)  # fmt: skip

# Names the transformed code calls; they live in the globals so task data cannot shadow them.
_GUARDS: dict[str, Any] = {
    "_getattr_": _getattr_,
    "_getitem_": default_guarded_getitem,
    "_getiter_": default_guarded_getiter,
    "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
    "_unpack_sequence_": guarded_unpack_sequence,
    "_write_": full_write_guard,  # dict/list pass through; anything else refuses writes
    "_inplacevar_": _inplacevar_,
    "_augitem_": _augitem_,
    "_apply_": _apply_,
    "_print_": _DiscardPrint,
    "_tick_": _tick_,
    "_mul_": _mul_,
    "_pow_": _pow_,
    "_lshift_": _lshift_,
    "_mod_": _mod_,
}


# ---------------------------------------------------------------------------------------------------------
# Compiler: RestrictedPython's policy plus our refusals and the injected deadline checks.

_FORBIDDEN_NAMES = frozenset(
    {"open", "eval", "exec", "compile", "globals", "locals", "vars", "breakpoint", "memoryview", "exit",
     "quit", "help"}
)  # fmt: skip
_METHOD_CALL = ".method-call"  # a used_names key no real name can collide with
_BINOP_GUARDS = {ast.Mult: "_mul_", ast.Pow: "_pow_", ast.LShift: "_lshift_", ast.Mod: "_mod_"}
_BIG_NUMBER = re.compile(rf"\d{{{MAX_FORMAT_DIGITS + 1},}}")


def _call(name: str, args: list[ast.expr], like: ast.AST) -> ast.Call:
    node = ast.Call(func=ast.Name(name, ast.Load()), args=args, keywords=[])
    copy_locations(node, like)
    return node


def _tick_stmt(like: ast.AST) -> ast.Expr:
    stmt = ast.Expr(_call("_tick_", [], like))
    copy_locations(stmt, like)
    return stmt


class _BatonPolicy(RestrictingNodeTransformer):
    """RestrictedPython's transformer, stricter, with guarded operators and deadline checks."""

    def _needs_tick(self) -> None:
        self.used_names["_tick_"] = True

    def _prepend_tick(self, body: list[ast.stmt], like: ast.AST) -> None:
        body.insert(0, _tick_stmt(like))
        self._needs_tick()

    # refusals
    def visit_Import(self, node: ast.Import) -> None:
        self.error(node, "import statements are not allowed")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.error(node, "import statements are not allowed")

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.error(node, "class definitions are not allowed")

    def visit_With(self, node: ast.With) -> None:
        self.error(node, "with statements are not allowed")

    def visit_Yield(self, node: ast.Yield) -> None:
        self.error(node, "yield is not allowed (use a list or a generator expression)")

    def visit_YieldFrom(self, node: ast.YieldFrom) -> None:
        self.error(node, "yield is not allowed (use a list or a generator expression)")

    def visit_Name(self, node: ast.Name) -> Any:
        if isinstance(node.ctx, ast.Load) and node.id in _FORBIDDEN_NAMES:
            self.error(node, f'"{node.id}" is not available in scripts')
        return super().visit_Name(node)

    def visit_Attribute(self, node: ast.Attribute) -> Any:
        if node.attr in _EXTRA_BLOCKED_ATTRS:  # RestrictedPython already refuses the others
            hint = " (use an f-string)" if node.attr in ("format", "format_map") else ""
            self.error(node, f'access to attribute "{node.attr}" is not allowed{hint}')
        return super().visit_Attribute(node)

    def visit_Call(self, node: ast.Call) -> Any:
        func = node.func
        if isinstance(func, ast.Name) and func.id in {"getattr", "hasattr", "setattr", "delattr"}:
            if len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                name = node.args[1].value
                if isinstance(name, str) and (name.startswith("_") or name in _BLOCKED_ATTRS):
                    self.error(node, f'access to attribute "{name}" is not allowed')
        if isinstance(func, ast.Attribute):
            self.used_names[_METHOD_CALL] = True
        return super().visit_Call(node)

    def visit_FormattedValue(self, node: ast.FormattedValue) -> Any:
        spec = node.format_spec
        if spec is not None:
            parts = spec.values if isinstance(spec, ast.JoinedStr) else [spec]
            if not all(isinstance(p, ast.Constant) for p in parts):
                self.error(node, "f-string format specs must be literal (no nested {...})")
            elif _BIG_NUMBER.search("".join(str(p.value) for p in parts)):
                self.error(node, "f-string width/precision must be below 10000")
        return super().visit_FormattedValue(node)

    # guarded operators
    def visit_BinOp(self, node: ast.BinOp) -> Any:
        node = super().visit_BinOp(node)
        guard = _BINOP_GUARDS.get(type(node.op))
        if guard is None:
            return node
        return _call(guard, [node.left, node.right], node)

    def visit_AugAssign(self, node: ast.AugAssign) -> Any:
        target = node.target
        if not isinstance(target, ast.Subscript):
            return super().visit_AugAssign(node)
        op = IOPERATOR_TO_STR[type(node.op)]
        obj = self.visit(target.value)
        key = self.visit(target.slice)
        value = self.visit(node.value)
        stmt = ast.Expr(_call("_augitem_", [obj, key, ast.Constant(op), value], node))
        copy_locations(stmt, node)
        return stmt

    # deadline checks
    def visit_While(self, node: ast.While) -> Any:
        node = super().visit_While(node)
        self._prepend_tick(node.body, node)
        return node

    def visit_For(self, node: ast.For) -> Any:
        node = super().visit_For(node)
        self._prepend_tick(node.body, node)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> Any:
        node = super().visit_FunctionDef(node)
        self._prepend_tick(node.body, node)
        return node

    def visit_Lambda(self, node: ast.Lambda) -> Any:
        node = super().visit_Lambda(node)
        node.body = ast.BoolOp(op=ast.Or(), values=[_call("_tick_", [], node.body), node.body])
        copy_locations(node.body, node.body.values[1])
        self._needs_tick()
        return node

    def visit_comprehension(self, node: ast.comprehension) -> Any:
        node = super().visit_comprehension(node)
        check = ast.UnaryOp(op=ast.Not(), operand=_call("_tick_", [], node.iter))
        copy_locations(check, node.iter)
        node.ifs.insert(0, check)
        self._needs_tick()
        return node

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> Any:
        node = super().visit_ExceptHandler(node)
        self._prepend_tick(node.body, node)
        return node

    def visit_Try(self, node: ast.Try) -> Any:
        node = super().visit_Try(node)
        if node.finalbody:
            self._prepend_tick(node.finalbody, node.finalbody[0])
        return node


class CompiledScript(NamedTuple):
    code: types.CodeType
    mode: str
    calls_methods: bool  # only method calls (append, update...) can change task data from an expression


def _compile_or_errors(
    source: str, mode: str
) -> tuple[types.CodeType | None, tuple[str, ...], Mapping[str, bool]]:
    if mode == "eval":
        source = source.lstrip(" \t")  # what builtin eval() does, and SpiffWorkflow used eval()
    tree = ast.parse(source, SCRIPT_FILENAME, mode)  # SyntaxError propagates with its line number
    compiler = compile_restricted_eval if mode == "eval" else compile_restricted_exec
    result = compiler(tree, SCRIPT_FILENAME, policy=_BatonPolicy)
    return result.code, tuple(result.errors), result.used_names


@functools.lru_cache(maxsize=4096)
def compile_script(source: str, mode: Literal["exec", "eval"]) -> CompiledScript:
    """Compile once per (source, mode): every gateway condition runs through here.

    Raises ``SyntaxError`` for invalid Python and ``ScriptForbidden`` for refused constructs (refusals are
    not cached; they are rare and recompiling them costs nothing that matters).
    """
    if mode not in ("exec", "eval"):
        raise ValueError(f"mode must be 'exec' or 'eval', not {mode!r}")
    code, errors, used_names = _compile_or_errors(source, mode)
    if errors or code is None:
        raise ScriptForbidden("Script refused: " + "; ".join(dict.fromkeys(errors)))
    return CompiledScript(code, mode, _METHOD_CALL in used_names)


def validate_script(source: str, *, mode: Literal["exec", "eval"]) -> str | None:
    """The sandbox's verdict on ``source`` for the BPMN linter at upload: an error message, or None."""
    try:
        compile_script(source, mode)
    except SyntaxError as exc:
        return f"Line {exc.lineno}: SyntaxError: {exc.msg}"
    except ScriptError as exc:
        return str(exc)
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:  # null bytes, absurd nesting
        return f"{type(exc).__name__}: {exc}"
    return None


# ---------------------------------------------------------------------------------------------------------
# SpiffWorkflow integration


def _check_functions(functions: Mapping[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    checked = {}
    for name, fn in functions.items():
        if not name.isidentifier() or name.startswith("_"):
            raise ValueError(f"script function name {name!r} must be an identifier not starting with '_'")
        if isinstance(fn, types.ModuleType) or not callable(fn):
            raise ValueError(f"script function {name!r} must be a vetted callable, never a module")
        checked[name] = fn
    return checked


def _check_data_size(data: dict[str, Any]) -> None:
    """Refuse task data the serializer could not handle: ``x = [x, x]`` 40 times in a loop is 2**40 values.

    Shared sub-structures cost nothing to build but are serialized in full (outside the sandbox, without
    a time limit). The walk stops as soon as the budget is spent, so it costs at most ~MAX_DATA_ITEMS steps
    and a few microseconds for ordinary data.
    """
    budget = MAX_DATA_ITEMS
    stack: list[Any] = [data]
    while stack:
        obj = stack.pop()
        kind = type(obj)
        if kind is dict:
            budget -= len(obj) + 1
            stack.extend(obj.values())
        elif kind is list or kind is tuple or kind is set or kind is frozenset:
            budget -= len(obj) + 1
            stack.extend(obj)
        elif kind is str or kind is bytes:
            budget -= len(obj) >> 6
        if budget < 0:
            raise ScriptError(
                f"Script refused: task data would exceed {MAX_DATA_ITEMS:,} values (or refers to itself)"
            )


class SandboxedEnvironment(TaskDataEnvironment):
    """TaskDataEnvironment whose evaluate/execute run RestrictedPython code under a deadline."""

    def __init__(
        self,
        *,
        timeout: float = 2.0,
        functions: Mapping[str, Callable[..., Any]] | None = None,
        services: Callable[[str, dict[str, Any], dict[str, Any]], str] | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds")
        script_builtins = dict(_BASE_BUILTINS)
        script_builtins.update(_check_functions(functions or {}))
        super().__init__({"__builtins__": script_builtins, **_GUARDS})
        self.timeout = float(timeout)
        self.services = services

    def evaluate(self, expression: str, context: dict[str, Any], external_context: dict | None = None) -> Any:
        compiled = compile_script(expression, "eval")
        self._prepare_context(context)
        scope = dict(external_context) if external_context else {}
        scope.update(context)
        scope.update(self.globals)  # guards and builtins win over task data
        result = self._run(compiled.code, scope)
        if compiled.calls_methods:
            _check_data_size(context)
        return result

    def execute(self, script: str, context: dict[str, Any], external_context: dict | None = None) -> bool:
        compiled = compile_script(script, "exec")
        self.check_for_overwrite(context, external_context or {})
        self._prepare_context(context)
        if external_context:
            context.update(external_context)
        context.update(self.globals)
        try:
            self._run(compiled.code, context)
        finally:
            # drops __builtins__, guards, external context and every callable (functions stay out of data)
            self._remove_globals_and_functions_from_context(context, external_context)
        _check_data_size(context)
        return True

    def _run(self, code: types.CodeType, scope: dict[str, Any]) -> Any:
        state = _state
        previous = state.deadline, state.limit
        deadline = _monotonic() + self.timeout
        state.deadline, state.limit = deadline, self.timeout
        try:
            result = eval(code, scope)  # restricted code object, guarded scope
        except ScriptTimeout:
            raise
        except Exception as exc:
            if _monotonic() > deadline:
                raise ScriptTimeout(_timeout_message(self.timeout)) from exc
            raise
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # never let SystemExit & co. out of a script
            raise ScriptError(f"Script raised {type(exc).__name__}") from exc
        finally:
            state.deadline, state.limit = previous
        if _monotonic() > deadline:  # finished, but only after one long C-level call
            raise ScriptTimeout(_timeout_message(self.timeout))
        return result

    def call_service(
        self,
        context: dict[str, Any],
        operation_name: str | None = None,
        operation_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> str:
        """Run a service task through the configured connector; it must return JSON text."""
        if self.services is None:
            raise ScriptError(
                f"Service task operation {operation_name!r} cannot run: no service connector is configured"
            )
        result = self.services(operation_name or "", operation_params or {}, context)
        if not isinstance(result, (str, bytes, bytearray)):
            raise ScriptError(
                f"Service connector returned {type(result).__name__} for {operation_name!r}, "
                "expected JSON text"
            )
        return result if isinstance(result, str) else bytes(result).decode("utf-8")


class BatonScriptEngine(PythonScriptEngine):
    """PythonScriptEngine on the sandbox, with clear error messages and a working call_service."""

    def __init__(
        self,
        *,
        timeout: float = 2.0,
        functions: Mapping[str, Callable[..., Any]] | None = None,
        services: Callable[[str, dict[str, Any], dict[str, Any]], str] | None = None,
    ) -> None:
        environment = SandboxedEnvironment(timeout=timeout, functions=functions, services=services)
        super().__init__(environment=environment)

    @property
    def timeout(self) -> float:
        return self.environment.timeout

    def evaluate(self, task: Any, expression: str, external_context: dict | None = None) -> Any:
        """As upstream, but the message says what went wrong, not only which expression failed."""
        try:
            return self.environment.evaluate(expression, task.data, external_context)
        except SpiffWorkflowException as exc:
            exc.add_note(f"Error evaluating expression '{expression}'")
            raise
        except Exception as exc:
            raise WorkflowTaskException(
                f"Error evaluating expression '{expression}': {_describe(exc)}", task=task, exception=exc
            ) from exc

    def call_service(self, task: Any, **kwargs: Any) -> str:
        """Upstream's error path references an undefined ``script`` (NameError): ENGINE-NOTES bug 2."""
        try:
            return self.environment.call_service(task.data, **kwargs)
        except SpiffWorkflowException:
            raise
        except Exception as exc:
            name = kwargs.get("operation_name")
            raise WorkflowTaskException(
                f"Service task operation {name!r} failed: {_describe(exc)}", task=task, exception=exc
            ) from exc

    def create_task_exec_exception(self, task: Any, script: str, err: Exception) -> Exception:
        """Upstream builds ``Name:args[0]`` (TypeError when args[0] is not a str, e.g. KeyError(1))."""
        line_number, error_line = self.get_error_line_number_and_content(script, err)
        if isinstance(err, SpiffWorkflowException):
            err.line_number = line_number
            err.error_line = error_line
            err.add_note(f"Python script error on line {line_number}: '{error_line}'")
            return err
        return WorkflowTaskException(
            _describe(err), task=task, exception=err, line_number=line_number, error_line=error_line
        )


def _describe(exc: BaseException) -> str:
    """Sandbox errors already read well; others get their type name for context."""
    if isinstance(exc, ScriptError):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
