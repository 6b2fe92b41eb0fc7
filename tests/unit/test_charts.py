"""Server-side SVG charts: well-formed, titled for screen readers, scaled to any width, escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from web.charts import Series, _nice, bar_chart, line_chart

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup) -> ET.Element:
    return ET.fromstring(str(markup))


class TestBarChart:
    def test_bars_are_proportional_and_each_one_says_its_value(self):
        svg = parse(
            bar_chart(
                [("提交 Submit", 10), ("审批 Approve", 40)], chart_id="c1", title="Wait", description="d"
            )
        )
        assert svg.get("role") == "img" and svg.get("aria-labelledby") == "c1-title c1-desc"
        assert svg.find(f"{SVG}title").text == "Wait" and svg.find(f"{SVG}desc").text == "d"
        assert svg.get("viewBox").startswith("0 0 480 ") and svg.get("width") is None  # as wide as its box
        bars = svg.findall(f"{SVG}g")
        widths = [float(g.find(f"{SVG}rect").get("width")) for g in bars]
        assert widths[1] == 4 * widths[0]
        assert [g.find(f"{SVG}title").text for g in bars] == ["提交 Submit: 10", "审批 Approve: 40"]

    def test_missing_values_draw_no_bar_and_labels_format_values(self):
        svg = parse(
            bar_chart(
                [("a", None), ("b", 7200.0)], chart_id="c", title="t", value_label=lambda v: f"{v / 3600:g} h"
            )
        )
        first, second = svg.findall(f"{SVG}g")
        assert float(first.find(f"{SVG}rect").get("width")) == 0
        assert first.find(f"{SVG}title").text == "a: –" and second.find(f"{SVG}title").text == "b: 2 h"

    def test_names_from_bpmn_files_are_escaped(self):
        markup = str(bar_chart([("<script>alert(1)</script>", 1)], chart_id='x" onload="y', title="<b>"))
        assert "<script>" not in markup and "&lt;script&gt;" in markup
        assert 'onload="y"' not in markup
        parse(markup)

    def test_an_empty_chart_is_still_valid(self):
        svg = parse(bar_chart([], chart_id="e", title="nothing"))
        assert svg.find(f"{SVG}title").text == "nothing"


class TestLineChart:
    def test_one_line_per_series_with_a_legend_and_a_round_scale(self):
        labels = ["11-23", "11-24", "11-25"]
        svg = parse(
            line_chart(
                labels,
                [Series("发起数", [2, 1, 1]), Series("Finished", [1, 2, 0])],
                chart_id="tp",
                title="Throughput",
                description="2 series",
            )
        )
        lines = svg.findall(f"{SVG}polyline")
        assert len(lines) == 2 and lines[1].get("stroke-dasharray")  # told apart without colour too
        points = [[tuple(map(float, p.split(","))) for p in line.get("points").split()] for line in lines]
        assert [x for x, _ in points[0]] == [x for x, _ in points[1]]  # same x positions
        assert points[0][0][1] < points[0][1][1]  # 2 drawn higher than 1
        texts = [t.text for t in svg.iter(f"{SVG}text")]
        assert {"发起数", "Finished", "11-23", "11-24", "11-25", "2", "0"} <= set(texts)
        tips = [c.find(f"{SVG}title").text for c in svg.iter(f"{SVG}circle")]
        assert "发起数 · 11-24: 1" in tips and len(tips) == 6

    def test_a_single_point_and_all_zero_values(self):
        svg = parse(line_chart(["11-23"], [Series("s", [0])], chart_id="one", title="t"))
        assert svg.findall(f"{SVG}polyline") == [] and len(svg.findall(f"{SVG}circle")) == 1

    def test_only_first_middle_and_last_labels_fit_a_phone(self):
        labels = [f"d{i}" for i in range(30)]
        svg = parse(line_chart(labels, [Series("s", list(range(30)))], chart_id="m", title="t"))
        shown = {t.text for t in svg.iter(f"{SVG}text")} & set(labels)
        assert shown == {"d0", "d15", "d29"}


def test_nice_scale_tops():
    assert [_nice(v) for v in (0, 0.4, 1, 3, 7, 12, 120, 4999)] == [1, 1, 1, 5, 10, 20, 200, 5000]
