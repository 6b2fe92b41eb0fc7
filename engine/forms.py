"""Human-task forms: JSON Schema (or Camunda ``formData``) in, plain field descriptions and clean data out.

A user task names its form in one of two ways (see ``engine.bpmn.human_task_meta``): a JSON Schema
file of the deployment bundle (``camunda:formKey`` or spiff ``formJsonSchemaFilename``; shared forms
may live in the repository's top-level ``forms/`` directory), or Camunda ``formData`` fields, which
are turned into the same kind of schema here. ``form_for`` builds a ``Form``: the normalized schema
plus one ``FormField`` per property, which ``web/templates/forms/_fields.html`` renders.

Submitted data goes through ``clean``: ``parse_submission`` turns HTML-form strings into typed values
(JSON input is taken as it is, except money), ``validate_submission`` checks them against the schema
(Draft 2020-12, with date/date-time/email formats asserted) and Baton's own rules, and nothing that
fails reaches task data. Input that cannot be converted is kept as the user typed it, so the schema's
type check reports it next to its field.

Conventions a schema property can use (everything else is plain JSON Schema):

* ``format: "date"`` / ``"date-time"``: date and date-time pickers (values stored as ISO 8601 strings;
  date-times with their UTC offset).
* ``enum`` (labels from ``x-labels``, a list or a value -> label object, or ``enumNames``), or
  ``oneOf``/``anyOf`` of ``{const, title}``: a select. ``type: array`` with such ``items`` (and usually
  ``uniqueItems``): a multi-select.
* ``x-widget``: ``textarea``, ``money`` (a ``Decimal`` with at most two decimals), ``user`` (a user
  picker: free text with the page's ``users-datalist``) or ``file`` (limits: ``x-max-bytes``,
  default 5 MB, and ``x-accept``, e.g. ``".pdf,image/*"``). ``ui:widget`` in a spiff-arena UI schema
  works the same, as do ``ui:order``, ``ui:help``, ``ui:placeholder`` and ``ui:readonly``.
* ``type: boolean``: a checkbox. ``readOnly: true``: shown, never taken from a submission.
  ``maxLength`` over 200: a textarea. ``x-order``: field order. ``x-error``: the message shown when
  the property fails validation (instead of the generic one).
* Objects and free-form arrays have no widget: they are shown read-only (kind ``readonly``).

Task data feeds gateway conditions and scripts, so every submitted key must be a Python identifier
(not a keyword, not starting with ``_``, NFKC-stable) and strings may not contain NUL characters.

Nothing here knows about Flask; the web layer stores uploaded files itself (``parse_submission``
records only name, size and content type) and checks that a user picked in a user field exists.
"""

from __future__ import annotations

import copy
import json
import keyword
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import referencing.exceptions

from engine.bpmn import (
    DEFAULT_MAX_FILE_BYTES,
    FormFieldMeta,
    HumanTaskMeta,
    is_external_form_key,
    resolve_form_file,
)
from engine.errors import NotFoundError, ValidationError

__all__ = [
    "DEFAULT_TIMEZONE",
    "KINDS",
    "Form",
    "FormField",
    "clean",
    "errors_from_problems",
    "form_for",
    "form_values",
    "parse_submission",
    "summary_of",
    "validate_submission",
]

KINDS = frozenset(
    {"text", "textarea", "number", "integer", "money", "date", "datetime", "select", "multiselect",
     "checkbox", "user", "file", "readonly"}
)  # fmt: skip
#: Naive date-times from an HTML ``datetime-local`` input are read in this zone (see engine.calendar).
DEFAULT_TIMEZONE: tzinfo = ZoneInfo("Asia/Shanghai")

_WIDGETS = {"textarea", "money", "user", "file", "readonly"}
_UI_WIDGETS = {
    "textarea": "textarea", "money": "money", "user": "user", "file": "file", "readonly": "readonly",
    "radio": "select", "select": "select", "checkboxes": "multiselect", "date": "date",
    "datetime": "datetime", "checkbox": "checkbox",
}  # fmt: skip
_TEXTAREA_OVER = 200  # maxLength above this renders a textarea
_MAX_SHARED_FORM_BYTES = 1024 * 1024
_MAX_NUMBER_CHARS = 64
_TRUE = {"on", "true", "1", "yes", "y", "checked"}
_FALSE = {"off", "false", "0", "no", "n", ""}
_MONEY_QUANTUM = Decimal("0.01")
_SAFE_FORM_NAME = re.compile(r"^[\w][\w.\-/]*$")
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d*)?$")
_LOOSE_DATE = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", re.ASCII)


# --------------------------------------------------------------------------------------------------
# Public values
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FormField:
    """One top-level property of a form, as the templates render it.

    ``kind`` is one of ``KINDS``. ``readonly`` fields are displayed, never read from a submission;
    kind ``readonly`` means the value has no widget at all (objects, free-form arrays) and is always
    ``readonly``. ``options`` hold the schema's own values (strings, numbers...) with their labels;
    ``choice_value`` gives the string an HTML ``<option>`` carries. ``min``/``max`` are the numeric
    bounds, exclusive when ``exclusive_min``/``exclusive_max``.
    """

    name: str
    label: str
    kind: str = "text"
    required: bool = False
    options: tuple[tuple[Any, str], ...] = ()
    default: Any = field(default=None, hash=False)
    help: str | None = None
    min: int | float | None = None
    max: int | float | None = None
    exclusive_min: bool = False
    exclusive_max: bool = False
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    max_bytes: int | None = None
    accept: str | None = None
    readonly: bool = False
    format: str | None = None
    placeholder: str | None = None

    @property
    def dom_id(self) -> str:
        """The HTML id of the field's control (``f-`` + the name, made safe for an id)."""
        return "f-" + re.sub(r"[^\w-]", "_", self.name)

    @property
    def input_type(self) -> str:
        """The ``<input type>`` for input-based kinds."""
        if self.kind in ("number", "integer"):
            return "number"
        if self.kind == "datetime":
            return "datetime-local"
        if self.kind in ("date", "file", "checkbox"):
            return self.kind
        if self.kind == "text" and self.format == "email":
            return "email"
        return "text"

    @property
    def max_size(self) -> str | None:
        """The file size limit for people ("5 MB")."""
        return _human_size(self.max_bytes) if self.max_bytes is not None else None

    @property
    def step(self) -> str | None:
        return {"integer": "1", "number": "any"}.get(self.kind)

    def choice_value(self, value: Any) -> str:
        """The string an option (or a submitted choice) stands for: strings as they are, others as JSON."""
        return value if isinstance(value, str) else json.dumps(value)

    def selected(self, value: Any, option: Any) -> bool:
        """Whether ``option`` is chosen in ``value`` (a typed value, a submitted string, or a list)."""
        wanted = self.choice_value(option)
        items = value if isinstance(value, list | tuple) else [value]
        return any(v is not None and self.choice_value(v) == wanted for v in items)

    def checked(self, value: Any) -> bool:
        if isinstance(value, list | tuple):
            value = value[-1] if value else None
        if isinstance(value, str):
            return value.strip().lower() in _TRUE
        return value is True

    def input_value(self, value: Any) -> str:
        """The ``value=`` of a text-like input: a submitted string as typed, typed data formatted."""
        if isinstance(value, list | tuple):
            value = value[0] if value else None
        if value is None:
            return ""
        if isinstance(value, Decimal) and self.kind == "money" and value.is_finite():
            return f"{value:.2f}"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return value
        return str(value)

    def display(self, value: Any, tz: tzinfo | None = None) -> str:
        """A human-readable rendering of a stored value (read-only display, summaries)."""
        if value is None:
            return ""
        if self.kind == "checkbox" or isinstance(value, bool):
            return "是 Yes" if self.checked(value) else "否 No"
        if self.kind in ("select", "multiselect"):
            labels = dict((self.choice_value(v), label) for v, label in self.options)
            items = value if isinstance(value, list | tuple) else [value]
            return ", ".join(labels.get(self.choice_value(v), self.choice_value(v)) for v in items)
        if self.kind == "money":
            amount = _to_decimal(value)
            return f"{amount:,.2f}" if amount is not None else str(value)
        if self.kind == "datetime" and isinstance(value, str):
            local = _local_datetime(value, tz or DEFAULT_TIMEZONE)
            return local.replace("T", " ") if local else value
        if self.kind == "file" and isinstance(value, Mapping):
            name = str(value.get("filename") or "")
            size = value.get("size")
            return f"{name} ({_human_size(size)})" if isinstance(size, int) else name
        if isinstance(value, str):
            return value
        if isinstance(value, Mapping | list | tuple):
            return json.dumps(value, ensure_ascii=False, default=str)
        return str(value)


@dataclass(frozen=True)
class Form:
    """A rendered-form description: title, description, fields in display order, the JSON Schema.

    ``schema`` is the normalized schema submissions are validated against (do not change it).
    """

    title: str | None
    description: str | None
    fields: tuple[FormField, ...]
    schema: dict[str, Any] = field(hash=False, compare=False, repr=False)

    def field(self, name: str) -> FormField | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def has_files(self) -> bool:
        """True when the HTML form must be sent as ``multipart/form-data``."""
        return any(f.kind == "file" and not f.readonly for f in self.fields)

    @property
    def has_user_fields(self) -> bool:
        """True when the page should provide the ``users-datalist`` for user pickers."""
        return any(f.kind == "user" and not f.readonly for f in self.fields)


# --------------------------------------------------------------------------------------------------
# Building forms
# --------------------------------------------------------------------------------------------------


def form_for(
    meta: HumanTaskMeta,
    bundle_files: Mapping[str, bytes],
    shared_forms_dir: Path | None = None,
) -> Form | None:
    """The form of a human task, or None when the task has none (or only a Camunda web-app form).

    The form key is looked up in the bundle (``engine.bpmn.resolve_form_file``), then in
    ``shared_forms_dir``; when it names no file there, Camunda ``formData`` fields are used. A UI
    schema (spiff ``formUiSchemaFilename``) is applied when found. Raises ``NotFoundError`` when the
    key names no form anywhere and the task has no ``formData``, and ``ValidationError`` when the form
    file is not JSON or not a valid JSON Schema object.
    """
    document = None
    key = meta.form_key
    if key and not is_external_form_key(key):
        document = _load_form(key, bundle_files, shared_forms_dir)
        if document is None and not meta.form_fields:
            raise NotFoundError(f"form {key!r} is neither in the deployment nor among the shared forms")
    if document is None:
        if not meta.form_fields:
            return None
        document = schema_from_form_data(meta.form_fields)
    ui_schema: Mapping[str, Any] = {}
    if meta.form_ui_schema:
        loaded = _load_form(meta.form_ui_schema, bundle_files, shared_forms_dir)
        ui_schema = loaded if isinstance(loaded, Mapping) else {}
    return form_from_schema(document, ui_schema=ui_schema, name=key or "formData")


def form_from_schema(
    schema: Mapping[str, Any], *, ui_schema: Mapping[str, Any] | None = None, name: str = "form"
) -> Form:
    """A ``Form`` from a JSON Schema object (and an optional rjsf/spiff-arena UI schema).

    Raises ``ValidationError`` when ``schema`` is not a valid JSON Schema object.
    """
    if not isinstance(schema, Mapping):
        raise ValidationError(f"form {name!r} must be a JSON Schema object, not {type(schema).__name__}")
    normalized = copy.deepcopy(dict(schema))
    if "type" not in normalized and "properties" in normalized:
        normalized["type"] = "object"
    try:
        _validator_class(normalized).check_schema(normalized)
    except jsonschema.SchemaError as exc:
        raise ValidationError(f"form {name!r} is not a valid JSON Schema: {exc.message}") from None
    ui = ui_schema or {}
    properties = normalized.get("properties")
    if not isinstance(properties, Mapping):
        properties = {}
    required = set(normalized.get("required") or ())
    fields = [
        _field(prop_name, prop, normalized, prop_name in required, ui.get(prop_name) or {})
        for prop_name, prop in properties.items()
        if isinstance(prop, Mapping)
    ]
    for f in fields:  # money is validated as a number, whatever type the author wrote
        if f.kind == "money":
            prop = properties[f.name]
            if prop.get("type") != "number":
                for k in ("type", "pattern", "minLength", "maxLength", "format"):
                    prop.pop(k, None)
                prop["type"] = "number"
    order = normalized.get("x-order") or ui.get("ui:order")
    if isinstance(order, list):
        fields = _ordered(fields, [str(o) for o in order])
    return Form(
        title=_str_or_none(normalized.get("title")),
        description=_str_or_none(normalized.get("description")),
        fields=tuple(fields),
        schema=normalized,
    )


_CAMUNDA_TYPES = {
    "string": {"type": "string"},
    "long": {"type": "integer"},
    "integer": {"type": "integer"},
    "double": {"type": "number"},
    "boolean": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
    "enum": {"type": "string"},
}


def schema_from_form_data(fields: Iterable[FormFieldMeta]) -> dict[str, Any]:
    """The JSON Schema equivalent of Camunda ``formData`` fields (string, long, boolean, date, enum).

    Validation constraints ``required``, ``readonly``, ``minlength``, ``maxlength``, ``min`` and
    ``max`` are kept; a ``x-widget`` (or ``widget``) property picks a widget. Unknown keys are refused.
    """
    properties: dict[str, Any] = {}
    required: list[str] = []
    for meta in fields:
        if not meta.id:
            continue
        ftype = (meta.type or "string").strip()
        prop: dict[str, Any] = dict(_CAMUNDA_TYPES.get(ftype, {"type": "string"}))
        prop["title"] = meta.label or meta.id
        if ftype == "enum" and meta.options:
            prop["enum"] = [value for value, _ in meta.options]
            prop["x-labels"] = {value: label or value for value, label in meta.options}
        for name, config in meta.validation:
            name = name.strip().lower()
            if name == "required":
                required.append(meta.id)
            elif name == "readonly":
                prop["readOnly"] = True
            elif name in ("minlength", "maxlength") and _int_or_none(config) is not None:
                prop["minLength" if name == "minlength" else "maxLength"] = _int_or_none(config)
            elif name in ("min", "max") and _number_or_none(config) is not None:
                prop["minimum" if name == "min" else "maximum"] = _number_or_none(config)
        for name, value in meta.properties:
            if name in ("x-widget", "widget") and value:
                prop["x-widget"] = value.strip()
        default = _camunda_default(ftype, meta.default_value)
        if default is not None:
            prop["default"] = default
        properties[meta.id] = prop
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(dict.fromkeys(required))
    return schema


def _camunda_default(ftype: str, value: str | None) -> Any:
    if value is None or not value.strip() or value.strip().startswith(("${", "#{")):
        return None  # expressions are evaluated by Camunda's engine, not here
    text = value.strip()
    if ftype in ("long", "integer"):
        return _int_or_none(text)
    if ftype == "double":
        return _number_or_none(text)
    if ftype == "boolean":
        return text.lower() in _TRUE
    if ftype == "date":
        match = re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{4})", text)  # Camunda's dd/MM/yyyy
        return f"{match[3]}-{int(match[2]):02d}-{int(match[1]):02d}" if match else _iso_date(text)
    return text


def _load_form(key: str, bundle_files: Mapping[str, bytes], shared_dir: Path | None) -> Any:
    name = resolve_form_file(key, list(bundle_files))
    if name is not None:
        return _parse_json(bundle_files[name], name)
    path = _shared_form_path(key, shared_dir)
    if path is None:
        return None
    if path.stat().st_size > _MAX_SHARED_FORM_BYTES:
        raise ValidationError(f"shared form {key!r} is larger than {_human_size(_MAX_SHARED_FORM_BYTES)}")
    return _parse_json(path.read_bytes(), key)


def _shared_form_path(key: str, shared_dir: Path | None) -> Path | None:
    """A ``.json`` file inside ``shared_dir`` (never outside it, whatever the key says)."""
    if shared_dir is None:
        return None
    key = key.strip()
    while key.startswith("./"):
        key = key[2:]
    if not _SAFE_FORM_NAME.match(key) or ".." in key.split("/"):
        return None
    root = shared_dir.resolve()
    for candidate in (key, key + ".json"):
        if not candidate.lower().endswith(".json"):
            continue
        path = (root / candidate).resolve()
        if path.is_relative_to(root) and path.is_file():
            return path
    return None


def _parse_json(data: bytes, name: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValidationError(f"form {name!r} is not valid JSON: {exc}") from None


def _field(
    name: str, prop: Mapping[str, Any], root: Mapping[str, Any], required: bool, ui: Mapping[str, Any]
) -> FormField:
    prop = _resolve_ref(prop, root)
    ptype = _main_type(prop)
    widget = prop.get("x-widget") or ui.get("ui:widget")
    widget = _UI_WIDGETS.get(str(widget).strip().lower()) if widget else None
    readonly = bool(prop.get("readOnly")) or bool(ui.get("ui:readonly")) or bool(ui.get("ui:disabled"))
    options = _choices(prop)
    items = _resolve_ref(prop.get("items"), root) if isinstance(prop.get("items"), Mapping) else None
    item_options = _choices(items) if items is not None else ()
    fmt = prop.get("format") if isinstance(prop.get("format"), str) else None
    if widget in _WIDGETS:
        kind = widget
    elif widget == "multiselect" or (ptype == "array" and item_options):
        kind, options = "multiselect", item_options or options
    elif widget == "select" or (options and ptype != "array"):
        kind = "select"
    elif widget in ("date", "datetime", "checkbox"):
        kind = widget
    elif ptype == "boolean":
        kind = "checkbox"
    elif ptype in ("integer", "number"):
        kind = ptype
    elif ptype in ("object", "array"):
        kind = "readonly"
    elif fmt == "date":
        kind = "date"
    elif fmt == "date-time":
        kind = "datetime"
    elif isinstance(prop.get("maxLength"), int) and prop["maxLength"] > _TEXTAREA_OVER:
        kind = "textarea"
    else:
        kind = "text"
    minimum, exclusive_min = _bound(prop, "minimum", "exclusiveMinimum")
    maximum, exclusive_max = _bound(prop, "maximum", "exclusiveMaximum")
    accept = prop.get("x-accept") or prop.get("contentMediaType")
    if isinstance(accept, list):
        accept = ",".join(str(a) for a in accept)
    max_bytes = prop.get("x-max-bytes")
    help_text = ui.get("ui:help") or prop.get("description")
    return FormField(
        name=name,
        label=_str_or_none(prop.get("title")) or name,
        kind=kind,
        required=required and not readonly,
        options=options,
        default=copy.deepcopy(prop.get("default")),
        help=_str_or_none(help_text),
        min=minimum,
        max=maximum,
        exclusive_min=exclusive_min,
        exclusive_max=exclusive_max,
        min_length=prop.get("minLength") if isinstance(prop.get("minLength"), int) else None,
        max_length=prop.get("maxLength") if isinstance(prop.get("maxLength"), int) else None,
        pattern=prop.get("pattern") if isinstance(prop.get("pattern"), str) else None,
        max_bytes=(max_bytes if isinstance(max_bytes, int) else DEFAULT_MAX_FILE_BYTES)
        if kind == "file"
        else None,
        accept=str(accept) if kind == "file" and accept else None,
        readonly=readonly or kind == "readonly",
        format=fmt,
        placeholder=_str_or_none(ui.get("ui:placeholder") or prop.get("x-placeholder")),
    )


def _resolve_ref(prop: Mapping[str, Any], root: Mapping[str, Any], depth: int = 0) -> Mapping[str, Any]:
    """Follows a local ``$ref`` (``#/$defs/...``) for presentation; siblings of ``$ref`` win."""
    ref = prop.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/") or depth > 8:
        return prop
    target: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        target = target.get(part) if isinstance(target, Mapping) else None
    if not isinstance(target, Mapping):
        return prop
    merged = dict(_resolve_ref(target, root, depth + 1))
    merged.update((k, v) for k, v in prop.items() if k != "$ref")
    return merged


def _main_type(prop: Mapping[str, Any]) -> str | None:
    ptype = prop.get("type")
    if isinstance(ptype, list):
        ptype = next((t for t in ptype if t != "null"), None)
    if ptype is None and "enum" in prop:
        return None
    return ptype if isinstance(ptype, str) else None


def _choices(prop: Mapping[str, Any]) -> tuple[tuple[Any, str], ...]:
    enum = prop.get("enum")
    if isinstance(enum, list) and enum:
        labels = prop.get("x-labels", prop.get("enumNames"))
        if isinstance(labels, Mapping):
            return tuple((v, str(labels.get(_label_key(v), _label_key(v)))) for v in enum)
        if isinstance(labels, list) and len(labels) == len(enum):
            return tuple((v, str(label)) for v, label in zip(enum, labels, strict=True))
        return tuple((v, _label_key(v)) for v in enum)
    for key in ("oneOf", "anyOf"):
        alternatives = prop.get(key)
        if isinstance(alternatives, list) and alternatives:
            if all(isinstance(a, Mapping) and "const" in a for a in alternatives):
                return tuple(
                    (a["const"], str(a.get("title") or _label_key(a["const"]))) for a in alternatives
                )
    return ()


def _label_key(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _bound(prop: Mapping[str, Any], inclusive: str, exclusive: str) -> tuple[int | float | None, bool]:
    value = prop.get(exclusive)
    if _is_number(value):
        return value, True
    value = prop.get(inclusive)
    return (value, False) if _is_number(value) else (None, False)


def _ordered(fields: list[FormField], order: list[str]) -> list[FormField]:
    by_name = {f.name: f for f in fields}
    listed = [n for n in order if n in by_name]
    rest = [f.name for f in fields if f.name not in listed]
    if "*" in order:
        star = order.index("*")
        before = [n for n in order[:star] if n in by_name]
        after = [n for n in order[star + 1 :] if n in by_name]
        names = before + rest + after
    else:
        names = listed + rest
    return [by_name[n] for n in names]


# --------------------------------------------------------------------------------------------------
# Values for the templates
# --------------------------------------------------------------------------------------------------


def form_values(
    form: Form,
    *,
    data: Mapping[str, Any] | None = None,
    submitted: Mapping[str, Any] | None = None,
    tz: tzinfo | None = None,
) -> dict[str, Any]:
    """The ``values`` to give ``render_form``: what each field shows.

    Without ``submitted``: the field defaults overlaid with ``data`` (the task's data). With
    ``submitted`` (a werkzeug MultiDict, or a mapping of names to strings or lists of strings): what
    the user sent, as typed (multi-selects as lists, an absent checkbox unchecked); read-only fields
    still show ``data``. Date-times from data are shown in ``tz`` (default Asia/Shanghai).
    """
    data = data or {}
    zone = tz or DEFAULT_TIMEZONE
    values: dict[str, Any] = {}
    for f in form.fields:
        if submitted is not None and not f.readonly:
            if f.kind == "file":
                continue
            items = _getlist(submitted, f.name)
            if f.kind == "multiselect":
                values[f.name] = items
            elif f.kind == "checkbox":
                values[f.name] = bool(items) and f.checked(items[-1])
            elif items:
                values[f.name] = items[0]
            continue
        value = data[f.name] if f.name in data else copy.deepcopy(f.default)
        if f.kind == "datetime" and isinstance(value, str):
            value = _local_datetime(value, zone) or value
        if value is not None:
            values[f.name] = value
    return values


def summary_of(data: Mapping[str, Any], form: Form, *, tz: tzinfo | None = None) -> list[tuple[str, str]]:
    """``(label, display value)`` for each field of ``form`` present in ``data``, in form order."""
    return [(f.label, f.display(data[f.name], tz)) for f in form.fields if f.name in data]


# --------------------------------------------------------------------------------------------------
# Parsing submissions
# --------------------------------------------------------------------------------------------------

FileInfo = tuple[str | None, int, str | None]  # (filename, size in bytes, content type)


def parse_submission(
    form: Form,
    raw: Mapping[str, Any],
    *,
    files: Mapping[str, FileInfo] | None = None,
    from_json: bool = False,
    tz: tzinfo | None = None,
) -> dict[str, Any]:
    """Typed data from a submission; never raises (what cannot be converted is kept as typed).

    HTML form input (``raw`` a MultiDict or a mapping of names to strings/lists of strings): keys that
    are not editable fields of the form (the CSRF token, buttons, read-only fields) are dropped; empty
    strings count as missing; numbers become int/float, money a ``Decimal`` with two decimals, a
    checkbox a bool (absent: False), multi-selects a list, choices the schema's own value, dates ISO
    ``YYYY-MM-DD``, date-times ISO with the offset of ``tz`` (default Asia/Shanghai). ``files`` gives
    ``(filename, size, content_type)`` per file field; the value becomes a dict of those three.

    JSON input (``from_json=True``): taken as it is, except read-only fields (dropped) and money
    (a number or numeric string becomes a ``Decimal``). Unknown keys are kept for validation.
    """
    data: dict[str, Any] = {}
    files = files or {}
    if from_json:
        by_name = {f.name: f for f in form.fields}
        for key, value in raw.items():
            f = by_name.get(key)
            if f is not None and f.readonly:
                continue
            if f is not None and f.kind == "money":
                value = _json_money(value)
            data[key] = value
        return data
    zone = tz or DEFAULT_TIMEZONE
    for f in form.fields:
        if f.readonly:
            continue
        if f.kind == "file":
            info = files.get(f.name)
            if info is not None and info[0]:
                filename, size, content_type = info
                data[f.name] = {
                    "filename": re.split(r"[\\/]", str(filename))[-1],
                    "size": int(size),
                    "content_type": content_type or "application/octet-stream",
                }
            continue
        items = [i if isinstance(i, str) else str(i) for i in _getlist(raw, f.name)]
        items = [i.replace("\x00", "") for i in items]
        if f.kind == "checkbox":
            data[f.name] = _html_bool(items[-1]) if items else False
        elif f.kind == "multiselect":
            chosen = [_choice(f, i.strip()) for i in items if i.strip()]
            if chosen:
                data[f.name] = chosen
        elif items:
            value = _html_scalar(f, items[0], zone)
            if value is not None:
                data[f.name] = value
    return data


def _html_scalar(f: FormField, text: str, zone: tzinfo) -> Any:
    if f.kind == "textarea":
        return text.replace("\r\n", "\n").replace("\r", "\n").strip() or None
    text = text.strip()
    if not text:
        return None
    if f.kind in ("number", "integer"):
        return _html_number(text, integer=f.kind == "integer")
    if f.kind == "money":
        return _html_money(text)
    if f.kind == "select":
        return _choice(f, text)
    if f.kind == "date":
        return _iso_date(text) or text
    if f.kind == "datetime":
        return _iso_datetime(text, zone) or text
    return text


def _html_number(text: str, *, integer: bool) -> Any:
    normal = _numeric_text(text)
    if normal is None:
        return text
    if re.fullmatch(r"[+-]?\d+", normal):
        return int(normal)
    try:
        number = float(normal)
    except ValueError:
        return text
    if not math.isfinite(number):
        return text
    return int(number) if integer and number.is_integer() else number


def _html_money(text: str) -> Any:
    normal = _numeric_text(text.lstrip("¥$").strip())
    amount = _to_decimal(normal) if normal is not None else None
    return _money(amount) if amount is not None else text


def _json_money(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal):
        amount = _to_decimal(value)
    elif isinstance(value, str) and len(value) <= _MAX_NUMBER_CHARS:
        amount = _to_decimal(value.strip())
    else:
        amount = None
    return _money(amount) if amount is not None else value


def _money(amount: Decimal) -> Decimal:
    """Two decimals; an amount with more significant decimals is kept so validation refuses it."""
    try:
        rounded = amount.quantize(_MONEY_QUANTUM)
    except InvalidOperation:  # beyond Decimal's precision
        return amount
    return rounded if rounded == amount else amount


def _numeric_text(text: str) -> str | None:
    """NFKC (full-width digits), without thousands separators; None when too long to be a number."""
    text = unicodedata.normalize("NFKC", text).strip().replace("，", ",")
    if len(text) > _MAX_NUMBER_CHARS:
        return None
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    return text


def _to_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        amount = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, ValueError, TypeError):
        return None
    return amount if amount.is_finite() else None


def _html_bool(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return text


def _choice(f: FormField, text: str) -> Any:
    """The schema value an option string stands for; unknown strings are kept (the enum refuses them)."""
    return next((v for v, _ in f.options if f.choice_value(v) == text), text)


def _iso_date(text: str) -> str | None:
    text = unicodedata.normalize("NFKC", text).strip()
    match = _LOOSE_DATE.match(text)
    if match:
        text = f"{match[1]}-{int(match[2]):02d}-{int(match[3]):02d}"
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text, re.ASCII):
        return None
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        return None


def _iso_datetime(text: str, zone: tzinfo) -> str | None:
    text = unicodedata.normalize("NFKC", text).strip()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:\d{2})?", text):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.isoformat(timespec="seconds")


def _local_datetime(value: str, zone: tzinfo) -> str | None:
    """An ISO date-time as the ``YYYY-MM-DDTHH:MM`` wall time in ``zone`` (a datetime-local value)."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(zone)
    return moment.strftime("%Y-%m-%dT%H:%M")


def _getlist(raw: Mapping[str, Any], name: str) -> list[Any]:
    getlist = getattr(raw, "getlist", None)
    if callable(getlist):
        return list(getlist(name))
    value = raw.get(name)
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _is_datetime(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    return bool(_RFC3339.match(instance)) and datetime.fromisoformat(instance.upper()) is not None


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker()
    checker.checks("date-time", raises=ValueError)(_is_datetime)
    return checker


_FORMAT_CHECKER = _format_checker()


def _multiple_of(validator: Any, divisor: Any, instance: Any, schema: Any) -> Iterable[Any]:
    """``multipleOf`` computed exactly (jsonschema's float arithmetic refuses 12.34 for 0.01)."""
    if not validator.is_type(instance, "number") or not _is_number(divisor) or divisor <= 0:
        return
    if isinstance(instance, Decimal) and not instance.is_finite():
        return

    def exact(x: Any) -> Fraction:
        return Fraction(repr(x)) if isinstance(x, float) else Fraction(x)

    if (exact(instance) / exact(divisor)).denominator != 1:
        yield jsonschema.ValidationError(f"{instance!r} is not a multiple of {divisor}")


def _validator_class(schema: Mapping[str, Any]) -> type:
    base = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return jsonschema.validators.extend(base, validators={"multipleOf": _multiple_of})


def validate_submission(form: Form, data: Mapping[str, Any]) -> dict[str, list[str]]:
    """Field name -> messages for everything wrong with ``data`` (empty when it is clean).

    Checks: every key is an identifier scripts can use, no read-only field is set, strings hold no
    NUL, money has at most two decimals, files respect their size and type limits, and the JSON
    Schema (Draft 2020-12 unless the form says otherwise; date, date-time and email formats asserted)
    holds, including ``additionalProperties: false``. Errors inside a field (a multi-select item) are
    reported under the field's name; errors about the whole form under ``""``.
    """
    errors: dict[str, list[str]] = {}

    def add(path: str, message: str) -> None:
        bucket = errors.setdefault(path, [])
        if message not in bucket:
            bucket.append(message)

    by_name = {f.name: f for f in form.fields}
    for key, value in data.items():
        f = by_name.get(key)
        if not _is_identifier(key):
            message: str | None = "字段名无效 / field names must be identifiers (letters, digits and _)"
        elif f is not None and f.readonly:
            message = "只读字段，不能修改 / read-only field"
        elif _has_nul(value):
            message = "包含非法字符 / contains a NUL character"
        elif f is not None and f.kind == "money":
            message = _money_problem(value)
        elif f is not None and f.kind == "file":
            message = _file_problem(f, value)
        else:
            message = None
        if message:
            add(str(key), message)
    flagged = set(errors)  # a field Baton already refused needs no schema noise on top
    validator = _validator_class(form.schema)(_validation_schema(form), format_checker=_FORMAT_CHECKER)
    try:
        found = sorted(validator.iter_errors(dict(data)), key=lambda e: list(map(str, e.absolute_path)))
    except referencing.exceptions.Unresolvable as exc:
        add("", f"表单定义无法解析 / the form's schema cannot be resolved: {exc}")
        found = []
    for error in found:
        for path, message in _messages(error, form):
            if path not in flagged:
                add(path, message)
    ordered = {f.name: errors.pop(f.name) for f in form.fields if f.name in errors}
    return {**ordered, **errors}


def _validation_schema(form: Form) -> dict[str, Any]:
    """The form's schema minus what Baton checks itself: file fields, read-only fields' ``required``."""
    schema = dict(form.schema)
    properties = dict(schema.get("properties") or {})
    skipped = {f.name for f in form.fields if f.readonly}
    for f in form.fields:
        if f.kind == "file" and not f.readonly:
            properties[f.name] = {}
    if properties:
        schema["properties"] = properties
    if skipped and isinstance(schema.get("required"), list):
        schema["required"] = [r for r in schema["required"] if r not in skipped]
    return schema


_ENTER_AMOUNT = "请输入金额 / enter an amount, e.g. 1234.50"


def _money_problem(value: Any) -> str | None:
    amount = (
        None
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal)
        else _to_decimal(value)
    )
    if amount is None:
        return _ENTER_AMOUNT
    try:
        exact = amount == amount.quantize(_MONEY_QUANTUM)
    except InvalidOperation:
        return "金额过大 / amount too large"
    return None if exact else "最多两位小数 / at most 2 decimal places"


def _file_problem(f: FormField, value: Any) -> str | None:
    if not isinstance(value, Mapping) or not value.get("filename") or not isinstance(value.get("size"), int):
        return "文件无效 / not an uploaded file"
    size = value["size"]
    if f.max_bytes is not None and size > f.max_bytes:
        limit = _human_size(f.max_bytes)
        return f"文件过大（最大 {limit}）/ file too large (max {limit})"
    if f.accept and not _accepted(f.accept, str(value["filename"]), str(value.get("content_type") or "")):
        return f"文件类型不允许（允许 {f.accept}）/ file type not allowed (allowed: {f.accept})"
    return None


def _accepted(accept: str, filename: str, content_type: str) -> bool:
    name, ctype = filename.lower(), content_type.split(";")[0].strip().lower()
    for token in (t.strip().lower() for t in accept.split(",")):
        if not token:
            continue
        if token.startswith("."):
            if name.endswith(token):
                return True
        elif token.endswith("/*"):
            if ctype.startswith(token[:-1]):
                return True
        elif ctype == token:
            return True
    return False


def _messages(error: jsonschema.ValidationError, form: Form) -> list[tuple[str, str]]:
    path = [str(p) for p in error.absolute_path]
    top = path[0] if path else ""
    kind = error.validator
    if kind == "required" and isinstance(error.instance, Mapping):
        missing = _quoted_name(error.message)
        target = missing if not path else top
        return [(target, "必填 / required")] if missing is not None else []
    if (
        kind == "additionalProperties"
        and error.validator_value is False
        and isinstance(error.instance, Mapping)
    ):
        extras = _extra_keys(error.instance, error.schema)
        if not path:
            return [(k, "未知字段 / unknown field") for k in extras]
        return [(top, f"未知字段 / unknown field: {', '.join(extras)}")]
    f = form.field(top) if top else None
    custom = error.schema.get("x-error") if isinstance(error.schema, Mapping) else None
    if not isinstance(custom, str) and f is not None and len(path) == 1:
        prop = (form.schema.get("properties") or {}).get(top)
        custom = prop.get("x-error") if isinstance(prop, Mapping) else None
    if isinstance(custom, str) and custom:
        return [(top, custom)]
    return [(top, _message(error, f))]


def _quoted_name(message: str) -> str | None:
    match = re.match(r"^'(.*)' is a required property$", message, re.DOTALL)
    return match[1].replace("\\'", "'") if match else None


def _extra_keys(instance: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    known = set(schema.get("properties") or {})
    patterns = list(schema.get("patternProperties") or {})
    return [str(k) for k in instance if k not in known and not any(re.search(p, str(k)) for p in patterns)]


_TYPE_MESSAGES = {
    "number": "请输入数字 / enter a number",
    "integer": "请输入整数 / enter a whole number",
    "string": "应为文本 / must be text",
    "boolean": "应为是或否 / must be true or false",
    "array": "应为列表 / must be a list",
    "object": "应为对象 / must be an object",
    "null": "应为空 / must be empty",
}
_FORMAT_MESSAGES = {
    "date": "日期无效，格式 YYYY-MM-DD / not a valid date (YYYY-MM-DD)",
    "date-time": "时间无效 / not a valid date and time (YYYY-MM-DDTHH:MM:SS+08:00)",
    "email": "邮箱地址无效 / not a valid e-mail address",
}


def _message(error: jsonschema.ValidationError, f: FormField | None) -> str:
    kind, value = error.validator, error.validator_value
    if kind == "type":
        wanted = value if isinstance(value, str) else next((t for t in value if t != "null"), "")
        if f is not None and f.kind == "money":
            return _ENTER_AMOUNT
        return _TYPE_MESSAGES.get(wanted, error.message)
    if kind == "minimum":
        return f"不能小于 {value} / must be at least {value}"
    if kind == "maximum":
        return f"不能大于 {value} / must be at most {value}"
    if kind == "exclusiveMinimum":
        return f"必须大于 {value} / must be greater than {value}"
    if kind == "exclusiveMaximum":
        return f"必须小于 {value} / must be less than {value}"
    if kind == "minLength":
        return f"至少 {value} 个字符 / at least {value} characters"
    if kind == "maxLength":
        return f"最多 {value} 个字符 / at most {value} characters"
    if kind == "pattern":
        return "格式不正确 / not in the expected format"
    if kind == "format":
        return _FORMAT_MESSAGES.get(value, f"格式不正确 / not a valid {value}")
    if kind in ("enum", "const") or (kind in ("oneOf", "anyOf") and f is not None and f.options):
        return "不是可选的值 / not one of the choices"
    if kind == "multipleOf":
        return f"必须是 {value} 的倍数 / must be a multiple of {value}"
    if kind == "minItems":
        return f"至少选择 {value} 项 / choose at least {value}"
    if kind == "maxItems":
        return f"最多选择 {value} 项 / choose at most {value}"
    if kind == "uniqueItems":
        return "不能重复 / must not repeat"
    return error.message


def clean(
    form: Form,
    raw: Mapping[str, Any],
    *,
    files: Mapping[str, FileInfo] | None = None,
    from_json: bool = False,
    tz: tzinfo | None = None,
) -> dict[str, Any]:
    """Parse and validate a submission; the data that may go into the task, or ``ValidationError``.

    The error's ``problems`` are ``{"field": name, "message": text}`` dicts (``field`` is ``""`` for
    the form as a whole); ``errors_from_problems`` turns them back into what ``render_form`` shows.
    Money comes back as ``Decimal`` (the engine's serializer stores it exactly).
    """
    if not isinstance(raw, Mapping):  # a JSON body that is a list, a string...
        problem = {"field": "", "message": "应为 JSON 对象 / the data must be a JSON object"}
        raise ValidationError("form is invalid", problems=[problem])
    data = parse_submission(form, raw, files=files, from_json=from_json, tz=tz)
    errors = validate_submission(form, data)
    if errors:
        problems = [{"field": path, "message": m} for path, messages in errors.items() for m in messages]
        raise ValidationError("form is invalid", problems=problems)
    return data


def errors_from_problems(problems: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """The ``{field: [messages]}`` view of a ``ValidationError``'s problems (for re-rendering a form)."""
    errors: dict[str, list[str]] = {}
    for problem in problems:
        errors.setdefault(str(problem.get("field") or ""), []).append(str(problem.get("message") or ""))
    return errors


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _is_identifier(key: Any) -> bool:
    return (
        isinstance(key, str)
        and key.isidentifier()
        and not keyword.iskeyword(key)
        and not key.startswith("_")
        and unicodedata.normalize("NFKC", key) == key
    )


def _has_nul(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if depth > 32:
        return False
    if isinstance(value, Mapping):
        return any(_has_nul(k, depth + 1) or _has_nul(v, depth + 1) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v, depth + 1) for v in value)
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _number_or_none(value: Any) -> int | float | None:
    number = _int_or_none(value)
    if number is not None:
        return number
    try:
        parsed = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return parsed if math.isfinite(parsed) else None


def _str_or_none(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return value.strip() or None


def _human_size(size: Any) -> str:
    if not isinstance(size, int):
        return "?"
    for unit, factor in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= factor:
            amount = size / factor
            return f"{amount:.0f} {unit}" if amount.is_integer() else f"{amount:.1f} {unit}"
    return f"{size} B"
