"""Every BPMN/DMN file of the external corpus either deploys or is refused cleanly; never a crash or hang.

The corpus (/work/shared/corpus, see its README) holds SpiffWorkflow's own test models, written by other
people: the closest thing to real uploads. Each file is checked alone; a file that calls processes or
decisions defined elsewhere in its folder is also checked as a bundle with those files (its
"closure"), and a folder whose files reference each other and share no ids is checked whole. Run with
``-s`` for the summary table; the same table is written to docs/corpus-report.md.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from lxml import etree
from SpiffWorkflow.bpmn.serializer.workflow import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow

from engine.bpmn import SERIALIZER_CONFIG, load_workflow_spec
from engine.lint import BundleReport, check_bundle

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
if not CORPUS.is_dir():
    pytest.skip(f"external BPMN corpus not found at {CORPUS}", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
REPORT_FILE = ROOT / "docs" / "corpus-report.md"
TIME_LIMIT = 5.0
BPMN = "{http://www.omg.org/spec/BPMN/20100524/MODEL}"
CAMUNDA = "{http://camunda.org/schema/1.0/bpmn}"
SPIFF = "{http://spiffworkflow.org/bpmn/schema/1.0/core}"

FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix in (".bpmn", ".dmn"))


def rel(path: Path) -> str:
    return path.relative_to(CORPUS).as_posix()


# ---------------------------------------------------------------------------------------------------
# Which files belong together: a plain, forgiving scan (the corpus is trusted to be XML here; a file
# that is not simply has no references).
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refs:
    defines: frozenset[str]  # process ids (BPMN) or decision ids (DMN)
    needs: frozenset[str]  # called processes and decisions not defined in the file itself


def scan(path: Path) -> Refs:
    try:
        root = etree.fromstring(path.read_bytes(), etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return Refs(frozenset(), frozenset())
    if path.suffix == ".dmn":
        return Refs(frozenset(d.get("id") for d in root.iter("{*}decision") if d.get("id")), frozenset())
    defines = {p.get("id") for p in root.iter(f"{BPMN}process") if p.get("id")}
    needs = {c.get("calledElement") for c in root.iter(f"{BPMN}callActivity") if c.get("calledElement")}
    for task in root.iter(f"{BPMN}businessRuleTask"):
        spiff_ref = task.findtext(f"{BPMN}extensionElements/{SPIFF}calledDecisionId")
        decision = task.get(f"{CAMUNDA}decisionRef") or spiff_ref
        if decision:
            needs.add(decision.strip())
    return Refs(frozenset(defines), frozenset(needs - defines))


REFS = {path: scan(path) for path in FILES}


def neighbourhood(path: Path) -> list[Path]:
    """Files of the same folder and its sub-folders (e.g. camunda/data + camunda/data/dmn)."""
    return [p for p in FILES if p != path and path.parent in p.parents]


def closure(path: Path) -> list[Path] | None:
    """The file plus the neighbours defining what it (transitively) needs; None if it needs nothing."""
    if not REFS[path].needs:
        return None
    chosen = [path]
    pending = set(REFS[path].needs)
    defined = set(REFS[path].defines)
    while pending:
        wanted = pending.pop()
        if wanted in defined:
            continue
        candidates = [p for p in neighbourhood(path) if wanted in REFS[p].defines and p not in chosen]
        if not candidates:
            continue  # genuinely missing: the bundle must be refused for it
        found = candidates[0]  # sorted, so deterministic
        chosen.append(found)
        defined |= REFS[found].defines
        pending |= REFS[found].needs - defined
    return chosen if len(chosen) > 1 else None


def folder_bundles() -> dict[str, list[Path]]:
    """Folders whose files reference each other and define no id twice: checked as one bundle."""
    bundles = {}
    for folder in sorted({p.parent for p in FILES}):
        members = [p for p in FILES if folder in p.parents or p.parent == folder]
        defined = Counter(i for p in members for i in REFS[p].defines)
        if any(n > 1 for n in defined.values()):
            continue
        if any(REFS[p].needs & set(defined) for p in members):
            bundles[f"folder {rel(folder)}/"] = members
    return bundles


BUNDLES: dict[str, list[Path]] = {rel(p): [p] for p in FILES}
for _path in FILES:
    _closure = closure(_path)
    if _closure is not None:
        BUNDLES[f"{rel(_path)} + {len(_closure) - 1} referenced"] = _closure
BUNDLES.update(folder_bundles())


# ---------------------------------------------------------------------------------------------------
# Checking
# ---------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    files: dict[str, bytes]
    report: BundleReport
    seconds: float


def bundle_files(paths: list[Path]) -> dict[str, bytes]:
    # Bundle names are the files' names relative to the first file's folder, as an upload would carry.
    base = paths[0].parent
    return {p.relative_to(base).as_posix() if base in p.parents else p.name: p.read_bytes() for p in paths}


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    results = {}
    for key, paths in BUNDLES.items():
        files = bundle_files(paths)
        started = time.perf_counter()
        report = check_bundle(files)
        results[key] = Outcome(files, report, time.perf_counter() - started)
    return results


@pytest.mark.parametrize("key", list(BUNDLES))
def test_bundle_deploys_or_is_refused_cleanly(key: str, outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes[key]
    report = outcome.report
    assert outcome.seconds < TIME_LIMIT, f"check took {outcome.seconds:.2f}s"
    if report.ok:
        assert report.processes, "an ok bundle must offer at least one process"
        serializer = BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(SERIALIZER_CONFIG))
        for info in report.processes:
            assert info.file in outcome.files
            started = time.perf_counter()
            spec, subprocess_specs = load_workflow_spec(outcome.files, info.id)
            workflow = BpmnWorkflow(spec, subprocess_specs)
            restored = serializer.deserialize_json(serializer.serialize_json(workflow))
            assert restored.spec.name == info.id
            assert set(restored.subprocess_specs) == set(subprocess_specs)
            assert time.perf_counter() - started < TIME_LIMIT
        return
    errors = [p for p in report.problems if p.severity == "error"]
    assert errors
    for problem in report.problems:
        assert problem.file in outcome.files, problem
        assert problem.message.strip(), problem
        assert not problem.message.startswith("internal error"), problem
        if problem.element_id is not None:
            assert problem.line is not None, f"element {problem.element_id} named without a line: {problem}"


# ---------------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------------

DMN_ALONE = "no BPMN file"


def status(outcome: Outcome) -> str:
    report = outcome.report
    if report.ok:
        return "ok"
    errors = [p for p in report.problems if p.severity == "error"]
    if all(DMN_ALONE in p.message for p in errors):
        return "valid DMN, not deployable alone"
    return "refused"


def reason(message: str) -> str:
    """Group similar messages: quoted names and numbers replaced."""
    message = re.sub(r"'[^']*'|\"[^\"]*\"", "…", message)
    message = re.sub(r"\(.*\)", "(…)", message)
    return re.sub(r"\d+", "N", message)


def render(outcomes: dict[str, Outcome]) -> str:
    singles = {k: o for k, o in outcomes.items() if len(BUNDLES[k]) == 1}
    combined = {k: o for k, o in outcomes.items() if len(BUNDLES[k]) > 1}
    by_kind = Counter((Path(k).suffix, status(o)) for k, o in singles.items())
    reasons = Counter(
        reason(next(p.message for p in o.report.problems if p.severity == "error"))
        for o in singles.values()
        if status(o) == "refused"
    )
    lines = [
        "# Corpus report",
        "",
        "Generated by `tests/unit/test_corpus.py` (engine.lint.check_bundle over /work/shared/corpus).",
        "",
        f"Files checked alone: {len(singles)}",
        "",
        *(
            f"- {kind} files: " + ", ".join(f"{n} {st}" for (k, st), n in by_kind.most_common() if k == kind)
            for kind in sorted({k for k, _ in by_kind})
        ),
        "",
        f"Bundles checked together (a file plus the files it references, whole folders): {len(combined)}, "
        f"{sum(status(o) == 'ok' for o in combined.values())} ok",
        f"Every check finished within the {TIME_LIMIT:.0f} s limit.",
        "",
        "## Refused files by first error",
        "",
        "| count | reason |",
        "|---:|---|",
    ]
    lines += [f"| {n} | {r} |" for r, n in reasons.most_common()]
    lines += ["", "## Every check", "", "| bundle | result | processes / first problem |", "|---|---|---|"]
    for key, outcome in outcomes.items():
        report = outcome.report
        if report.ok:
            detail = ", ".join(p.id for p in report.processes)
            warnings = sum(p.severity == "warning" for p in report.problems)
            if warnings:
                detail += f" ({warnings} warning{'s' if warnings > 1 else ''})"
        else:
            first = next(p for p in report.problems if p.severity == "error")
            where = first.file + (f":{first.line}" if first.line else "")
            element = f" [{first.element_id}]" if first.element_id else ""
            detail = f"{where}{element} {first.message}"
        detail = detail.replace("|", "\\|")
        lines.append(f"| {key} | {status(outcome)} | {detail} |")
    return "\n".join(lines) + "\n"


def test_summary_report(outcomes: dict[str, Outcome]) -> None:
    text = render(outcomes)
    print("\n" + text)
    print(f"slowest check: {max(o.seconds for o in outcomes.values()):.3f} s")
    REPORT_FILE.parent.mkdir(exist_ok=True)
    if not REPORT_FILE.exists() or REPORT_FILE.read_text() != text:
        REPORT_FILE.write_text(text)
    assert sum(status(o) == "ok" for o in outcomes.values()) > 0
