"""Assignment attributes → people: literals, variables and org-chart expressions, with a fake org chart."""

from __future__ import annotations

import pytest

from engine.people import (
    ExpressionError,
    check_people_expression,
    parse_expression,
    resolve_people,
    split_people,
)


class FakeOrgChart:
    """An org chart in two dicts; records the questions asked."""

    def __init__(self, initiator: str | None = "li") -> None:
        self.initiator = initiator
        self.managers = {"li": "wang", "wang": "zhao", "zhang": "wang"}
        self.heads = {"财务部": "qian", "总部/销售部": "sun", "HR": "zhou"}
        self.asked: list[tuple[str, str]] = []

    def manager_of(self, username: str) -> str | None:
        self.asked.append(("manager_of", username))
        return self.managers.get(username)

    def department_head(self, department: str) -> str | None:
        self.asked.append(("department_head", department))
        return self.heads.get(department)


@pytest.fixture
def org() -> FakeOrgChart:
    return FakeOrgChart()


class TestLiteralsAndVariables:
    def test_literals_and_comma_lists(self):
        assert resolve_people(["alice", " bob , carol "], {}) == ("alice", "bob", "carol")

    def test_variables_in_both_spellings_and_lists_flatten(self):
        data = {"approver": "alice", "team": ["bob", "carol"], "form": {"owner": "dan"}}
        assert resolve_people(["${approver}", "=team", "${ form.owner }"], data) == (
            "alice",
            "bob",
            "carol",
            "dan",
        )

    def test_missing_variable_names_nobody_and_duplicates_collapse(self):
        assert resolve_people(["${nobody}", "alice", "alice"], {}) == ("alice",)

    def test_initiator_comes_from_the_org_chart_unless_a_variable_has_that_name(self, org):
        assert resolve_people(["${initiator}"], {}, org) == ("li",)
        assert resolve_people(["${initiator}"], {"initiator": "zhang"}, org) == ("zhang",)
        assert resolve_people(["${initiator}"], {}) == ()


class TestOrgChartExpressions:
    def test_manager_of_the_initiator_in_every_spelling(self, org):
        for raw in (
            "${manager(initiator)}",
            "=manager(initiator)",
            "manager(initiator)",
            "${ manager( initiator ) }",
        ):
            assert resolve_people([raw], {}, org) == ("wang",), raw

    def test_manager_argument_is_a_variable_a_quoted_or_a_bare_literal(self, org):
        assert resolve_people(["${manager(applicant)}"], {"applicant": "zhang"}, org) == ("wang",)
        assert resolve_people(["${manager('wang')}"], {}, org) == ("zhao",)
        assert resolve_people(['${manager("li")}'], {}, org) == ("wang",)
        assert resolve_people(["${manager(wang)}"], {}, org) == ("zhao",)  # no variable "wang"

    def test_nested_calls_give_the_skip_level_manager(self, org):
        assert resolve_people(["${manager(manager(initiator))}"], {}, org) == ("zhao",)

    def test_manager_of_a_list_variable_maps_over_it(self, org):
        assert resolve_people(["${manager(people)}"], {"people": ["li", "zhang", "wang"]}, org) == (
            "wang",
            "zhao",
        )

    def test_department_head_by_name_or_path_with_chinese_names(self, org):
        assert resolve_people(["${department_head('财务部')}"], {}, org) == ("qian",)
        assert resolve_people(["${department_head('总部/销售部')}"], {}, org) == ("sun",)
        assert resolve_people(["${department_head(财务部)}"], {}, org) == ("qian",)
        assert resolve_people(["=department_head(dept)"], {"dept": "HR"}, org) == ("zhou",)

    def test_group_is_just_its_name(self, org):
        assert resolve_people(["${group('finance')}", "group(legal)", "hr"], {}) == ("finance", "legal", "hr")

    def test_mixed_list_with_commas_inside_quotes(self, org):
        org.heads["A, B"] = "ab"
        raw = "alice, ${department_head('A, B')}, ${manager(initiator)}"
        assert resolve_people([raw], {}, org) == ("alice", "ab", "wang")

    def test_unresolvable_names_nobody(self, org):
        assert resolve_people(["${manager('ghost')}"], {}, org) == ()
        assert resolve_people(["${department_head('nowhere')}"], {}, org) == ()
        assert resolve_people(["${manager(initiator)}", "fallback"], {}) == ("fallback",)  # no org chart
        assert resolve_people(["${boss(initiator)}", "${manager(}"], {}, org) == ()

    def test_the_org_chart_is_not_asked_for_plain_names(self, org):
        resolve_people(["alice", "${approver}", "group('x')"], {"approver": "bob"}, org)
        assert org.asked == []


class TestParsing:
    def test_parse_tree(self):
        assert parse_expression("manager(manager(initiator))") == (
            "call",
            "manager",
            ("call", "manager", ("name", "initiator")),
        )
        assert parse_expression(" 'x y' ") == ("str", "x y")
        assert parse_expression("form.owner") == ("name", "form.owner")

    @pytest.mark.parametrize(
        "text",
        ["boss(x)", "manager(", "manager(a, b)", "manager()", "manager(a))", "a b", "manager(a-b)", ""],
    )
    def test_syntax_errors(self, text):
        with pytest.raises(ExpressionError):
            parse_expression(text)

    def test_split_keeps_quoted_and_nested_commas(self):
        assert split_people("a, ${department_head('x, y')}, manager(b) ,, ") == [
            "a",
            "${department_head('x, y')}",
            "manager(b)",
        ]

    def test_check_reports_only_expression_errors(self):
        assert check_people_expression("alice, ${manager(initiator)}, =team") == []
        problems = check_people_expression("alice, ${boss(initiator)}, manager(x")
        assert len(problems) == 2 and "unknown function 'boss'" in problems[0]
