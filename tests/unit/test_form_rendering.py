"""Server-side rendering of human-task forms (web/templates/forms/_fields.html), checked with lxml."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import lxml.html
import pytest
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from werkzeug.datastructures import MultiDict

from engine.bpmn import HumanTaskMeta
from engine.forms import Form, form_for, form_from_schema, form_values, parse_submission, validate_submission
from tests.conftest import ROOT, process_bundle
from tests.unit.test_forms import KITCHEN_SINK

TEMPLATES = ROOT / "web" / "templates"


@pytest.fixture(scope="module")
def env() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
    )
    environment.install_null_translations(newstyle=True)  # as Flask-Babel installs gettext: newstyle
    return environment


@pytest.fixture
def sink() -> Form:
    return form_from_schema(KITCHEN_SINK)


def render(
    env: Environment, form: Form, values: dict, errors: dict | None = None, **kwargs
) -> lxml.html.HtmlElement:
    template = env.from_string(
        '{% from "forms/_fields.html" import render_form %}'
        "{{ render_form(form, values, errors, csrf_token=csrf_token, readonly=readonly, users=users) }}"
    )
    html = template.render(
        form=form,
        values=values,
        errors=errors or {},
        csrf_token=kwargs.get("csrf_token"),
        readonly=kwargs.get("readonly", False),
        users=kwargs.get("users"),
    )
    return lxml.html.fragment_fromstring(html, create_parent="div")


def control(doc: lxml.html.HtmlElement, name: str) -> lxml.html.HtmlElement:
    (found,) = doc.xpath("//*[@name=$n]", n=name)
    return found


class TestFreshForm:
    def test_every_field_has_its_label(self, env: Environment, sink: Form) -> None:
        doc = render(env, sink, form_values(sink))
        for field in sink.fields:
            if field.readonly:
                (group,) = doc.xpath("//*[@role='group'][@aria-labelledby=$id]", id=f"{field.dom_id}-label")
                assert group.xpath("string(.//*[@id=$id])", id=f"{field.dom_id}-label") == field.label
                continue
            element = control(doc, field.name)
            assert element.get("id") == field.dom_id
            (label,) = doc.xpath("//label[@for=$id]", id=field.dom_id)
            assert label.text_content().replace("*", "").strip() == field.label

    def test_controls_per_kind(self, env: Environment, sink: Form) -> None:
        doc = render(env, sink, form_values(sink), csrf_token="tok-1", users=["zhangsan", ("lisi", "李四")])
        form = doc.find("form")
        assert form.get("method") == "post" and form.get("enctype") == "multipart/form-data"
        assert control(doc, "csrf_token").get("value") == "tok-1"
        assert control(doc, "count").get("type") == "number" and control(doc, "count").get("step") == "1"
        assert (control(doc, "count").get("min"), control(doc, "count").get("max")) == ("1", "99")
        assert control(doc, "amount").get("inputmode") == "decimal"
        assert control(doc, "spent_on").get("type") == "date"
        assert control(doc, "meeting_at").get("type") == "datetime-local"
        assert control(doc, "notes").tag == "textarea" and control(doc, "summary").tag == "textarea"
        assert control(doc, "tags").tag == "select" and control(doc, "tags").get("multiple") is not None
        assert control(doc, "city").tag == "select" and control(doc, "city").get("multiple") is None
        assert control(doc, "urgent").get("type") == "checkbox"
        assert control(doc, "contact").get("type") == "email"
        receipt = control(doc, "receipt")
        assert (receipt.get("type"), receipt.get("accept")) == ("file", ".pdf,image/*")
        assert "1 KB" in doc.xpath("string(//*[@id=$id])", id="f-receipt-help")
        assert receipt.get("aria-describedby") == "f-receipt-help"
        assert control(doc, "approver").get("list") == "users-datalist"
        assert doc.xpath("//datalist[@id='users-datalist']/option/@value") == ["zhangsan", "lisi"]
        assert control(doc, "title").get("required") is not None
        assert control(doc, "title").get("maxlength") == "50"
        assert not doc.xpath("//script") and not doc.xpath("//@*[starts-with(name(), 'on')]")
        assert not doc.xpath("//*[@aria-invalid]") and not doc.xpath("//*[contains(@class, 'form-errors')]")

    def test_task_data_is_shown(self, env: Environment, sink: Form) -> None:
        data = {"title": "出差", "amount": Decimal("12.5"), "city": "bj", "level": 2, "urgent": True}
        doc = render(env, sink, form_values(sink, data=data))
        assert control(doc, "title").get("value") == "出差"
        assert control(doc, "amount").get("value") == "12.50"
        assert control(doc, "city").xpath("option[@selected]/@value") == ["bj"]
        assert control(doc, "level").xpath("option[@selected]/@value") == ["2"]
        assert control(doc, "urgent").get("checked") is not None

    def test_expense_claim(self, env: Environment) -> None:
        form = form_for(
            HumanTaskMeta(form_key="expense_claim.json"), process_bundle("expense_approval"), None
        )
        assert form is not None
        doc = render(env, form, {})
        assert doc.findtext(".//h2") == "费用报销单 Expense claim"
        assert control(doc, "amount").get("min") is None  # exclusive minimum: the server checks it
        assert control(doc, "reason").tag == "textarea"
        assert doc.find("form").get("enctype") == "multipart/form-data"  # the receipt upload
        assert control(doc, "receipt").get("accept") == ".pdf,image/*"


class TestRefusedSubmission:
    RAW = MultiDict(
        [
            ("title", "<b>差旅</b>"),
            ("notes", "第一行\n第二行"),
            ("count", "0"),
            ("amount", "12.345"),
            ("spent_on", "2024-13-01"),
            ("city", "sh"),
            ("tags", "travel"),
            ("tags", "office"),
            ("urgent", "on"),
            ("bogus", "x"),
        ]
    )

    @pytest.fixture
    def doc(self, env: Environment, sink: Form) -> lxml.html.HtmlElement:
        errors = validate_submission(sink, parse_submission(sink, self.RAW))
        errors[""] = ["流程已变更 / the process changed"]
        data = {"claim_no": "B-7"}
        return render(env, sink, form_values(sink, data=data, submitted=self.RAW), errors)

    def test_errors_are_next_to_their_fields(self, doc: lxml.html.HtmlElement) -> None:
        expected = {
            "title": "格式不正确 / not in the expected format",  # the pattern refuses < and >
            "count": "不能小于 1 / must be at least 1",
            "amount": "最多两位小数 / at most 2 decimal places",
            "spent_on": "日期无效，格式 YYYY-MM-DD / not a valid date (YYYY-MM-DD)",
        }
        invalid = doc.xpath("//*[@aria-invalid='true']/@name")
        assert sorted(invalid) == sorted(expected)
        for name, message in expected.items():
            element = control(doc, name)
            error_id = f"{element.get('id')}-error"
            assert error_id in element.get("aria-describedby").split()
            (error,) = doc.xpath("//*[@id=$id]", id=error_id)
            assert error.text_content() == message
            assert error.getparent() is element.getparent()  # in the same field block
            assert "has-error" in element.getparent().get("class")

    def test_summary_lists_problems_with_links(self, doc: lxml.html.HtmlElement) -> None:
        (summary,) = doc.xpath("//*[@role='alert']")
        assert summary.xpath(".//a/@href") == ["#f-title", "#f-count", "#f-amount", "#f-spent_on"]
        assert "流程已变更 / the process changed" in summary.text_content()

    def test_user_input_is_kept(self, doc: lxml.html.HtmlElement) -> None:
        assert control(doc, "title").get("value") == "<b>差旅</b>"  # escaped, shown as typed
        assert control(doc, "notes").text_content() == "第一行\n第二行"
        assert control(doc, "count").get("value") == "0"
        assert control(doc, "amount").get("value") == "12.345"
        date = control(doc, "spent_on")
        assert (date.get("type"), date.get("value")) == ("text", "2024-13-01")  # browsers blank bad dates
        assert control(doc, "city").xpath("option[@selected]/@value") == ["sh"]
        assert control(doc, "tags").xpath("option[@selected]/@value") == ["travel", "office"]
        assert control(doc, "urgent").get("checked") is not None
        assert doc.xpath("string(//*[@id='f-claim_no'])") == "B-7"
        assert not doc.xpath("//*[@name='bogus']")

    def test_unchecked_checkbox_stays_unchecked(self, env: Environment, sink: Form) -> None:
        doc = render(env, sink, form_values(sink, data={"urgent": True}, submitted={"title": ""}))
        assert control(doc, "urgent").get("checked") is None


class TestReadOnlyDisplay:
    DATA = {
        "title": "出差",
        "amount": Decimal("1234.5"),
        "city": "sh",
        "tags": ["travel", "meals"],
        "urgent": False,
        "receipt": {"filename": "fapiao.pdf", "size": 2048, "content_type": "application/pdf"},
    }

    def test_whole_form_read_only(self, env: Environment, sink: Form) -> None:
        doc = render(env, sink, form_values(sink, data=self.DATA), readonly=True)
        assert not doc.xpath("//form | //input | //select | //textarea")
        rows = {
            row.findtext("dt"): row.findtext("dd") for row in doc.xpath("//dl[@class='form-summary']/div")
        }
        assert rows == {
            "标题 Title": "出差",
            "金额 Amount": "1,234.50",
            "城市 City": "上海 Shanghai",
            "标签 Tags": "travel, meals",
            "加急 Urgent": "否 No",
            "发票 Receipt": "fapiao.pdf (2 KB)",
        }

    def test_read_only_field_inside_an_editable_form(self, env: Environment) -> None:
        form = form_from_schema(
            {
                "properties": {
                    "total": {"type": "number", "x-widget": "money", "title": "合计 Total", "readOnly": True},
                    "ok": {"type": "boolean", "title": "确认 Confirm"},
                }
            }
        )
        doc = render(env, form, form_values(form, data={"total": Decimal("99")}))
        assert not doc.xpath("//*[@name='total']")
        (group,) = doc.xpath("//*[@role='group']")
        assert group.findtext(".//span") == "合计 Total"
        assert doc.xpath("string(//*[@id='f-total'])") == "99.00"


def test_stylesheet_keeps_fields_inside_a_phone_screen() -> None:
    css = (ROOT / "web" / "static" / "forms.css").read_text("utf-8")
    assert "width: 100%" in css and "box-sizing: border-box" in css
    assert "font-size: 16px" in css  # no zoom-on-focus on iOS
    assert Path(TEMPLATES / "forms" / "_fields.html").is_file()
