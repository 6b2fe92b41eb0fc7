"""Human-task forms (engine.forms): building fields, coercing submissions, validating, cleaning."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from werkzeug.datastructures import MultiDict

from engine.bpmn import (
    DEFAULT_MAX_FILE_BYTES,
    FormFieldMeta,
    HumanTaskMeta,
    human_task_meta,
    load_workflow_spec,
)
from engine.errors import NotFoundError, ValidationError
from engine.forms import (
    Form,
    clean,
    errors_from_problems,
    form_for,
    form_from_schema,
    form_values,
    parse_submission,
    summary_of,
    validate_submission,
)
from tests.conftest import process_bundle

EXPENSE = process_bundle("expense_approval")

#: One property of every kind Baton renders.
KITCHEN_SINK = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "报销明细 Details",
    "type": "object",
    "required": ["title", "amount"],
    "additionalProperties": False,
    "properties": {
        "title": {"type": "string", "title": "标题 Title", "maxLength": 50, "pattern": "^[^<>]*$"},
        "notes": {"type": "string", "title": "备注 Notes", "maxLength": 2000},
        "summary": {"type": "string", "title": "摘要 Summary", "x-widget": "textarea"},
        "count": {"type": "integer", "title": "数量 Count", "minimum": 1, "maximum": 99},
        "rate": {"type": "number", "title": "汇率 Rate"},
        "amount": {"type": "number", "title": "金额 Amount", "x-widget": "money", "minimum": 0},
        "spent_on": {"type": "string", "format": "date", "title": "日期 Date"},
        "meeting_at": {"type": "string", "format": "date-time", "title": "时间 When"},
        "city": {
            "type": "string",
            "title": "城市 City",
            "enum": ["sh", "bj"],
            "x-labels": {"sh": "上海 Shanghai", "bj": "北京 Beijing"},
        },
        "level": {
            "title": "级别 Level",
            "oneOf": [{"const": 1, "title": "一级 L1"}, {"const": 2, "title": "二级 L2"}],
        },
        "tags": {
            "type": "array",
            "title": "标签 Tags",
            "uniqueItems": True,
            "items": {"type": "string", "enum": ["travel", "meals", "office"]},
        },
        "urgent": {"type": "boolean", "title": "加急 Urgent", "default": False},
        "approver": {"type": "string", "title": "审批人 Approver", "x-widget": "user"},
        "receipt": {
            "type": "string",
            "title": "发票 Receipt",
            "x-widget": "file",
            "x-max-bytes": 1024,
            "x-accept": ".pdf,image/*",
        },
        "claim_no": {"type": "string", "title": "单号 Claim no.", "readOnly": True},
        "contact": {"type": "string", "title": "邮箱 E-mail", "format": "email"},
    },
}


@pytest.fixture
def sink() -> Form:
    return form_from_schema(KITCHEN_SINK)


def expense_form(name: str) -> Form:
    form = form_for(HumanTaskMeta(form_key=name), EXPENSE, None)
    assert form is not None
    return form


class TestExpenseApprovalForms:
    def test_claim_form_fields(self) -> None:
        form = expense_form("expense_claim.json")
        assert form.title == "费用报销单 Expense claim"
        assert [(f.name, f.kind, f.required) for f in form.fields] == [
            ("amount", "number", True),
            ("category", "select", False),
            ("reason", "textarea", True),  # maxLength 500 > 200
            ("receipt", "file", False),
        ]
        amount = form.field("amount")
        assert amount is not None
        assert (amount.label, amount.min, amount.exclusive_min, amount.max) == (
            "金额 Amount (CNY)",
            0,
            True,
            1000000,
        )
        category = form.field("category")
        assert category is not None and [v for v, _ in category.options] == [
            "travel",
            "meals",
            "office",
            "other",
        ]
        reason = form.field("reason")
        assert reason is not None and (reason.min_length, reason.max_length) == (2, 500)

    def test_decision_form_fields(self) -> None:
        form = expense_form("approval_decision")  # the key without .json resolves too
        decision, comment = form.fields
        assert (decision.name, decision.kind, decision.required, decision.label) == (
            "decision",
            "select",
            True,
            "结论 Decision",
        )
        assert decision.options == (("approve", "同意 Approve"), ("reject", "驳回 Reject"))
        assert (comment.name, comment.kind, comment.max_length) == ("comment", "textarea", 1000)

    def test_form_of_the_deployed_user_task(self) -> None:
        spec, _ = load_workflow_spec(EXPENSE, "expense_approval")
        form = form_for(human_task_meta(spec.task_specs["manager_approval"]), EXPENSE, None)
        assert form is not None and form.field("decision") is not None

    def test_valid_claim_is_cleaned(self) -> None:
        form = expense_form("expense_claim.json")
        raw = MultiDict(
            [("amount", "128.5"), ("category", "meals"), ("reason", " 客户午餐 "), ("csrf_token", "t")]
        )
        assert clean(form, raw) == {"amount": 128.5, "category": "meals", "reason": "客户午餐"}

    def test_invalid_claim_lists_every_problem(self) -> None:
        form = expense_form("expense_claim.json")
        errors = validate_submission(form, parse_submission(form, {"amount": ["0"], "category": ["food"]}))
        assert errors == {
            "amount": ["必须大于 0 / must be greater than 0"],
            "category": ["不是可选的值 / not one of the choices"],
            "reason": ["必填 / required"],
        }


class TestFieldKinds:
    def test_conventions_give_kinds(self, sink: Form) -> None:
        kinds = {f.name: f.kind for f in sink.fields}
        assert kinds == {
            "title": "text",
            "notes": "textarea",
            "summary": "textarea",
            "count": "integer",
            "rate": "number",
            "amount": "money",
            "spent_on": "date",
            "meeting_at": "datetime",
            "city": "select",
            "level": "select",
            "tags": "multiselect",
            "urgent": "checkbox",
            "approver": "user",
            "receipt": "file",
            "claim_no": "text",
            "contact": "text",
        }

    def test_labels_options_and_limits(self, sink: Form) -> None:
        city, level, tags = sink.field("city"), sink.field("level"), sink.field("tags")
        assert city is not None and city.options == (("sh", "上海 Shanghai"), ("bj", "北京 Beijing"))
        assert level is not None and level.options == ((1, "一级 L1"), (2, "二级 L2"))
        assert tags is not None and [v for v, _ in tags.options] == ["travel", "meals", "office"]
        receipt = sink.field("receipt")
        assert receipt is not None and (receipt.max_bytes, receipt.accept) == (1024, ".pdf,image/*")
        assert sink.has_files and sink.has_user_fields
        claim_no = sink.field("claim_no")
        assert claim_no is not None and claim_no.readonly and not claim_no.required
        contact = sink.field("contact")
        assert contact is not None and contact.input_type == "email"

    def test_file_fields_default_to_the_upload_limit(self) -> None:
        form = form_from_schema({"properties": {"doc": {"type": "string", "x-widget": "file"}}})
        assert form.fields[0].max_bytes == DEFAULT_MAX_FILE_BYTES
        assert form.schema["type"] == "object"

    def test_objects_are_shown_read_only(self) -> None:
        form = form_from_schema({"type": "object", "properties": {"address": {"type": "object"}}})
        (address,) = form.fields
        assert (address.kind, address.readonly) == ("readonly", True)

    def test_field_order_and_local_refs(self) -> None:
        form = form_from_schema(
            {
                "type": "object",
                "x-order": ["b", "*", "a"],
                "$defs": {"cny": {"type": "number", "x-widget": "money", "title": "人民币 CNY"}},
                "properties": {
                    "a": {"type": "string"},
                    "c": {"$ref": "#/$defs/cny"},
                    "b": {"type": "string"},
                },
            }
        )
        assert [f.name for f in form.fields] == ["b", "c", "a"]
        assert (form.fields[1].kind, form.fields[1].label) == ("money", "人民币 CNY")

    def test_invalid_schema_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="not a valid JSON Schema"):
            form_from_schema({"type": "object", "properties": {"a": {"type": "text"}}})


class TestFindingForms:
    def test_shared_forms_directory_is_the_fallback(self, tmp_path: Path) -> None:
        (tmp_path / "leave.json").write_text(
            json.dumps({"title": "请假 Leave", "properties": {"days": {"type": "integer"}}}), "utf-8"
        )
        form = form_for(HumanTaskMeta(form_key="leave"), {}, tmp_path)
        assert form is not None and form.title == "请假 Leave" and form.fields[0].kind == "integer"

    def test_shared_forms_cannot_escape_their_directory(self, tmp_path: Path) -> None:
        shared = tmp_path / "forms"
        shared.mkdir()
        (tmp_path / "secret.json").write_text("{}", "utf-8")
        with pytest.raises(NotFoundError):
            form_for(HumanTaskMeta(form_key="../secret.json"), {}, shared)

    def test_missing_form_is_not_found(self) -> None:
        with pytest.raises(NotFoundError, match="nope.json"):
            form_for(HumanTaskMeta(form_key="nope.json"), EXPENSE, None)

    def test_no_form(self) -> None:
        assert form_for(HumanTaskMeta(), EXPENSE, None) is None
        assert form_for(HumanTaskMeta(form_key="embedded:app:forms/x.html"), {}, None) is None

    def test_broken_json_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="not valid JSON"):
            form_for(HumanTaskMeta(form_key="f.json"), {"f.json": b"{"}, None)

    def test_ui_schema_orders_and_picks_widgets(self) -> None:
        files = {
            "f.json": json.dumps({"properties": {"a": {"type": "string"}, "b": {"type": "string"}}}).encode(),
            "f.uischema.json": json.dumps(
                {"ui:order": ["b", "a"], "a": {"ui:widget": "textarea", "ui:help": "写清楚 Be clear"}}
            ).encode(),
        }
        form = form_for(HumanTaskMeta(form_key="f.json", form_ui_schema="f.uischema.json"), files, None)
        assert form is not None
        assert [(f.name, f.kind) for f in form.fields] == [("b", "text"), ("a", "textarea")]
        assert form.fields[1].help == "写清楚 Be clear"


CAMUNDA_BPMN = b"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="d" targetNamespace="http://baton.test">
  <bpmn:process id="leave" isExecutable="true">
    <bpmn:startEvent id="start" />
    <bpmn:userTask id="ask" name="Ask" camunda:formKey="leaveForm">
      <bpmn:extensionElements>
        <camunda:formData>
          <camunda:formField id="reason" label="\xe4\xba\x8b\xe7\x94\xb1 Reason" type="string">
            <camunda:validation>
              <camunda:constraint name="required" />
              <camunda:constraint name="maxlength" config="20" />
            </camunda:validation>
          </camunda:formField>
          <camunda:formField id="days" label="Days" type="long" defaultValue="1">
            <camunda:validation><camunda:constraint name="min" config="1" /></camunda:validation>
          </camunda:formField>
          <camunda:formField id="paid" label="Paid" type="boolean" />
          <camunda:formField id="start_on" label="From" type="date" />
          <camunda:formField id="kind" label="Kind" type="enum">
            <camunda:value id="annual" name="\xe5\xb9\xb4\xe5\x81\x87 Annual" />
            <camunda:value id="sick" name="\xe7\x97\x85\xe5\x81\x87 Sick" />
          </camunda:formField>
          <camunda:formField id="employee" label="Employee" type="string" defaultValue="${initiator}">
            <camunda:validation><camunda:constraint name="readonly" /></camunda:validation>
          </camunda:formField>
        </camunda:formData>
      </bpmn:extensionElements>
    </bpmn:userTask>
    <bpmn:endEvent id="end" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="ask" />
    <bpmn:sequenceFlow id="f2" sourceRef="ask" targetRef="end" />
  </bpmn:process>
</bpmn:definitions>
"""


class TestCamundaFormData:
    @pytest.fixture
    def form(self) -> Form:
        files = {"leave.bpmn": CAMUNDA_BPMN}
        spec, _ = load_workflow_spec(files, "leave")
        form = form_for(human_task_meta(spec.task_specs["ask"]), files, None)
        assert form is not None
        return form

    def test_fields(self, form: Form) -> None:
        assert [(f.name, f.kind, f.required, f.readonly) for f in form.fields] == [
            ("reason", "text", True, False),
            ("days", "integer", False, False),
            ("paid", "checkbox", False, False),
            ("start_on", "date", False, False),
            ("kind", "select", False, False),
            ("employee", "text", False, True),
        ]
        assert form.fields[0].label == "事由 Reason" and form.fields[0].max_length == 20
        assert form.fields[1].default == 1 and form.fields[1].min == 1
        assert form.fields[4].options == (("annual", "年假 Annual"), ("sick", "病假 Sick"))
        assert form.fields[5].default is None  # an expression default is Camunda's, not a value

    def test_schema(self, form: Form) -> None:
        assert form.schema["required"] == ["reason"]
        assert form.schema["additionalProperties"] is False
        assert form.schema["properties"]["days"] == {
            "type": "integer",
            "title": "Days",
            "minimum": 1,
            "default": 1,
        }
        assert form.schema["properties"]["start_on"]["format"] == "date"
        assert form.schema["properties"]["kind"]["enum"] == ["annual", "sick"]

    def test_clean(self, form: Form) -> None:
        raw = {
            "reason": ["看病"],
            "days": ["2"],
            "paid": ["on"],
            "start_on": ["2024-05-06"],
            "kind": ["sick"],
        }
        assert clean(form, raw) == {
            "reason": "看病",
            "days": 2,
            "paid": True,
            "start_on": "2024-05-06",
            "kind": "sick",
        }
        errors = validate_submission(form, parse_submission(form, {"days": ["0"], "kind": ["x"]}))
        assert errors["reason"] == ["必填 / required"]
        assert errors["days"] == ["不能小于 1 / must be at least 1"]
        assert errors["kind"] == ["不是可选的值 / not one of the choices"]

    def test_directly_built_meta(self) -> None:
        meta = HumanTaskMeta(
            form_fields=(FormFieldMeta(id="ok", label="同意 Agree", type="boolean", default_value="true"),)
        )
        form = form_for(meta, {}, None)
        assert form is not None and form.fields[0].kind == "checkbox" and form.fields[0].default is True


class TestCoercion:
    def test_html_strings_become_typed_values(self, sink: Form) -> None:
        raw = MultiDict(
            [
                ("title", "  出差  "),
                ("notes", "第一行\r\n第二行"),
                ("count", "３"),  # full-width digits
                ("rate", "7.25"),
                ("amount", "1,234.5"),
                ("spent_on", "2024/5/6"),
                ("meeting_at", "2024-05-06T09:30"),
                ("city", "bj"),
                ("level", "2"),
                ("tags", "travel"),
                ("tags", "meals"),
                ("urgent", "on"),
                ("approver", "lisi"),
                ("claim_no", "tampered"),
                ("csrf_token", "abc"),
                ("contact", ""),
            ]
        )
        data = parse_submission(
            sink, raw, files={"receipt": ("C:\\scans\\fapiao.pdf", 900, "application/pdf")}
        )
        assert data == {
            "title": "出差",
            "notes": "第一行\n第二行",
            "count": 3,
            "rate": 7.25,
            "amount": Decimal("1234.50"),
            "spent_on": "2024-05-06",
            "meeting_at": "2024-05-06T09:30:00+08:00",
            "city": "bj",
            "level": 2,
            "tags": ["travel", "meals"],
            "urgent": True,
            "approver": "lisi",
            "receipt": {"filename": "fapiao.pdf", "size": 900, "content_type": "application/pdf"},
        }
        assert validate_submission(sink, data) == {}

    def test_numbers(self) -> None:
        form = form_from_schema(
            {"properties": {"i": {"type": "integer"}, "n": {"type": "number"}, "m": {"x-widget": "money"}}}
        )
        assert parse_submission(form, {"i": "12", "n": "12", "m": "12"}) == {
            "i": 12,
            "n": 12,
            "m": Decimal("12.00"),
        }
        assert parse_submission(form, {"i": "12.0", "n": "-0.5", "m": "¥0.1"}) == {
            "i": 12,
            "n": -0.5,
            "m": Decimal("0.10"),
        }
        kept = parse_submission(form, {"i": "1.5", "n": "abc", "m": "12.345"})
        assert kept == {"i": 1.5, "n": "abc", "m": Decimal("12.345")}  # kept for validation to refuse
        assert parse_submission(form, {"n": "nan"}) == {"n": "nan"}
        assert parse_submission(form, {"n": "1e999"}) == {"n": "1e999"}

    def test_empty_strings_are_missing_and_unchecked_is_false(self, sink: Form) -> None:
        data = parse_submission(sink, {"title": "", "count": "  ", "city": "", "notes": "\r\n"})
        assert data == {"urgent": False}

    def test_checkbox_values(self) -> None:
        form = form_from_schema({"properties": {"ok": {"type": "boolean"}}})
        assert parse_submission(form, {"ok": "true"}) == {"ok": True}
        assert parse_submission(form, MultiDict([("ok", "false"), ("ok", "true")])) == {"ok": True}
        assert parse_submission(form, {"ok": "off"}) == {"ok": False}
        assert parse_submission(form, {"ok": "maybe"}) == {"ok": "maybe"}

    def test_dates(self) -> None:
        form = form_from_schema({"properties": {"d": {"type": "string", "format": "date"}}})
        assert parse_submission(form, {"d": "2024年5月6日"}) == {"d": "2024-05-06"}
        assert parse_submission(form, {"d": "2024-02-30"}) == {"d": "2024-02-30"}
        assert validate_submission(form, {"d": "2024-02-30"}) == {
            "d": ["日期无效，格式 YYYY-MM-DD / not a valid date (YYYY-MM-DD)"]
        }

    def test_json_input_is_not_coerced_except_money(self, sink: Form) -> None:
        body = {"title": "t", "count": "3", "amount": 12.3, "urgent": "yes", "claim_no": "x", "extra": 1}
        data = parse_submission(sink, body, from_json=True)
        assert data == {"title": "t", "count": "3", "amount": Decimal("12.30"), "urgent": "yes", "extra": 1}
        assert parse_submission(sink, {"amount": "99"}, from_json=True) == {"amount": Decimal("99.00")}
        errors = validate_submission(sink, data)
        assert errors["count"] == ["请输入整数 / enter a whole number"]
        assert errors["urgent"] == ["应为是或否 / must be true or false"]
        assert errors["extra"] == ["未知字段 / unknown field"]


class TestValidation:
    def messages(self, form: Form, data: dict) -> dict[str, list[str]]:
        return validate_submission(form, {"title": "t", "amount": Decimal("1.00"), **data})

    def test_required(self, sink: Form) -> None:
        assert validate_submission(sink, {}) == {"title": ["必填 / required"], "amount": ["必填 / required"]}

    def test_minimum_and_maximum(self, sink: Form) -> None:
        assert self.messages(sink, {"count": 0}) == {"count": ["不能小于 1 / must be at least 1"]}
        assert self.messages(sink, {"count": 100}) == {"count": ["不能大于 99 / must be at most 99"]}

    def test_enum(self, sink: Form) -> None:
        assert self.messages(sink, {"city": "gz"}) == {"city": ["不是可选的值 / not one of the choices"]}
        assert self.messages(sink, {"level": 3}) == {"level": ["不是可选的值 / not one of the choices"]}
        assert self.messages(sink, {"tags": ["travel", "golf"]}) == {
            "tags": ["不是可选的值 / not one of the choices"]
        }
        assert self.messages(sink, {"tags": ["meals", "meals"]}) == {"tags": ["不能重复 / must not repeat"]}

    def test_max_length(self, sink: Form) -> None:
        assert self.messages(sink, {"title": "长" * 51}) == {
            "title": ["最多 50 个字符 / at most 50 characters"]
        }

    def test_pattern(self, sink: Form) -> None:
        assert self.messages(sink, {"title": "<script>"}) == {
            "title": ["格式不正确 / not in the expected format"]
        }

    def test_custom_message(self) -> None:
        form = form_from_schema(
            {
                "properties": {
                    "zip": {"type": "string", "pattern": "^\\d{6}$", "x-error": "邮编为6位数字 / 6 digits"}
                }
            }
        )
        assert validate_submission(form, {"zip": "12"}) == {"zip": ["邮编为6位数字 / 6 digits"]}

    def test_date_and_date_time_and_email_formats(self, sink: Form) -> None:
        errors = self.messages(
            sink, {"spent_on": "06/05/2024", "meeting_at": "2024-05-06T09:30", "contact": "x"}
        )
        assert errors == {
            "spent_on": ["日期无效，格式 YYYY-MM-DD / not a valid date (YYYY-MM-DD)"],
            "meeting_at": ["时间无效 / not a valid date and time (YYYY-MM-DDTHH:MM:SS+08:00)"],
            "contact": ["邮箱地址无效 / not a valid e-mail address"],
        }
        ok = {"spent_on": "2024-05-06", "meeting_at": "2024-05-06T09:30:00Z", "contact": "a@b.cn"}
        assert self.messages(sink, ok) == {}

    def test_money_precision(self, sink: Form) -> None:
        assert validate_submission(sink, {"title": "t", "amount": Decimal("12.345")}) == {
            "amount": ["最多两位小数 / at most 2 decimal places"]
        }
        assert validate_submission(sink, {"title": "t", "amount": Decimal("12.340")}) == {}
        assert validate_submission(sink, {"title": "t", "amount": "abc"}) == {
            "amount": ["请输入金额 / enter an amount, e.g. 1234.50"]
        }
        assert validate_submission(sink, {"title": "t", "amount": Decimal("-1.00")}) == {
            "amount": ["不能小于 0 / must be at least 0"]
        }

    def test_money_multiple_of_is_exact(self) -> None:
        form = form_from_schema({"properties": {"m": {"x-widget": "money", "multipleOf": 0.01}}})
        assert clean(form, {"m": "12.34"}) == {"m": Decimal("12.34")}
        assert validate_submission(form, {"m": 0.3}) == {}

    def test_file_limits(self, sink: Form) -> None:
        big = parse_submission(sink, {}, files={"receipt": ("scan.pdf", 4096, "application/pdf")})
        assert self.messages(sink, big) == {"receipt": ["文件过大（最大 1 KB）/ file too large (max 1 KB)"]}
        exe = parse_submission(sink, {}, files={"receipt": ("x.exe", 10, "application/x-msdownload")})
        assert self.messages(sink, exe) == {
            "receipt": ["文件类型不允许（允许 .pdf,image/*）/ file type not allowed (allowed: .pdf,image/*)"]
        }
        photo = parse_submission(sink, {}, files={"receipt": ("IMG_1.HEIC", 10, "image/heic")})
        assert self.messages(sink, photo) == {}
        assert self.messages(sink, {"receipt": "forged.pdf"}) == {
            "receipt": ["文件无效 / not an uploaded file"]
        }
        assert parse_submission(sink, {}, files={"receipt": ("", 0, None)}) == {"urgent": False}

    def test_unknown_key_refused_when_additional_properties_false(self, sink: Form) -> None:
        assert self.messages(sink, {"bonus": 1}) == {"bonus": ["未知字段 / unknown field"]}
        open_form = form_from_schema({"properties": {"a": {"type": "string"}}})
        assert validate_submission(open_form, {"a": "x", "b": 1}) == {}

    def test_keys_must_be_identifiers(self) -> None:
        open_form = form_from_schema({"properties": {"a": {"type": "string"}}})
        bad = "字段名无效 / field names must be identifiers (letters, digits and _)"
        data = {"a-b": 1, "1a": 1, "class": 1, "_secret": 1, "__class__": 1, "ｆｕｌｌ": 1, "金额": 1}
        errors = validate_submission(open_form, data)
        assert errors == {key: [bad] for key in data if key != "金额"}

    def test_read_only_fields_cannot_be_set(self, sink: Form) -> None:
        assert self.messages(sink, {"claim_no": "x"}) == {
            "claim_no": ["只读字段，不能修改 / read-only field"]
        }

    def test_nul_characters_are_refused(self, sink: Form) -> None:
        assert self.messages(sink, {"title": "a\x00b"}) == {
            "title": ["包含非法字符 / contains a NUL character"]
        }

    def test_unresolvable_ref_is_a_form_error(self) -> None:
        form = form_from_schema({"properties": {"a": {"$ref": "https://example.com/a.json"}}})
        assert list(validate_submission(form, {"a": 1})) == [""]

    def test_whole_form_errors_go_under_empty_key(self) -> None:
        form = form_from_schema(
            {"properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "minProperties": 1}
        )
        assert list(validate_submission(form, {})) == [""]


class TestClean:
    def test_invalid_raises_validation_error_with_problems(self) -> None:
        form = expense_form("expense_claim.json")
        with pytest.raises(ValidationError) as caught:
            clean(form, {"amount": "-3", "reason": "x"})
        assert caught.value.message == "form is invalid"
        assert caught.value.problems == [
            {"field": "amount", "message": "必须大于 0 / must be greater than 0"},
            {"field": "reason", "message": "至少 2 个字符 / at least 2 characters"},
        ]
        assert errors_from_problems(caught.value.problems) == {
            "amount": ["必须大于 0 / must be greater than 0"],
            "reason": ["至少 2 个字符 / at least 2 characters"],
        }

    def test_json_body_must_be_an_object(self, sink: Form) -> None:
        with pytest.raises(ValidationError) as caught:
            clean(sink, ["title"], from_json=True)  # type: ignore[arg-type]
        assert caught.value.problems[0]["field"] == ""

    def test_json_clean(self, sink: Form) -> None:
        data = clean(sink, {"title": "t", "amount": "10.5", "tags": ["office"]}, from_json=True)
        assert data == {"title": "t", "amount": Decimal("10.50"), "tags": ["office"]}
        with pytest.raises(ValidationError) as caught:
            clean(sink, {"title": "t", "amount": 1.005}, from_json=True)
        assert caught.value.problems == [
            {"field": "amount", "message": "最多两位小数 / at most 2 decimal places"}
        ]


class TestDisplay:
    def test_summary_of_earlier_data(self, sink: Form) -> None:
        data = {
            "title": "出差",
            "amount": Decimal("1234.5"),
            "city": "sh",
            "tags": ["travel", "meals"],
            "urgent": True,
            "meeting_at": "2024-05-06T01:30:00+00:00",
            "receipt": {"filename": "a.pdf", "size": 2048, "content_type": "application/pdf"},
            "not_a_field": 1,
        }
        assert summary_of(data, sink) == [
            ("标题 Title", "出差"),
            ("金额 Amount", "1,234.50"),
            ("时间 When", "2024-05-06 09:30"),
            ("城市 City", "上海 Shanghai"),
            ("标签 Tags", "travel, meals"),
            ("加急 Urgent", "是 Yes"),
            ("发票 Receipt", "a.pdf (2 KB)"),
        ]

    def test_form_values(self, sink: Form) -> None:
        fresh = form_values(
            sink, data={"title": "旧", "meeting_at": "2024-05-06T01:30:00Z", "claim_no": "B-1"}
        )
        assert fresh == {"title": "旧", "meeting_at": "2024-05-06T09:30", "urgent": False, "claim_no": "B-1"}
        submitted = MultiDict([("title", "新"), ("tags", "travel"), ("tags", "office")])
        again = form_values(sink, data={"urgent": True, "claim_no": "B-1"}, submitted=submitted)
        assert again == {"title": "新", "tags": ["travel", "office"], "urgent": False, "claim_no": "B-1"}
