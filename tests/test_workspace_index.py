"""The workspace index (council/workspace): chunking, BM25 ranking, incremental updates,
limits, building in the background, and what completions and the council get from it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from council.completion import context as cx
from council.prompts import generate_prompt, research_prompt
from council.schemas import CouncilRequest, Plan, RequestContext
from council.workspace.chunks import identifier_tokens, is_test_path, pieces
from council.workspace.completion import CompletionContext
from council.workspace.council_context import council_snippets, used_names
from council.workspace.index import Index, file_stamp
from council.workspace.scan import Builder, Limits, walk
from council.workspace.synthetic import generate
from tests.waits import wait_until

GEOMETRY = '''\
"""Shapes."""

import math

UNIT = 1.0


@dataclass
class Polygon:
    points: list[tuple[float, float]]


def polygon_area(polygon: Polygon) -> float:
    """Shoelace formula."""
    pts = polygon.points
    return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(pts, pts[1:]))) / 2


def circle_area(radius: float) -> float:
    return math.pi * radius**2
'''

REPORT = """\
from geometry import polygon_area


def describe(shape):
    area = polygon_area(shape)
    return f"area {area}"
"""


def test_identifier_tokens_split_snake_and_camel_case() -> None:
    assert identifier_tokens("parseISODuration") == ("parseisoduration", "parse", "iso", "duration")
    assert identifier_tokens("polygon_area") == ("polygon_area", "polygon", "area")
    assert identifier_tokens("self") == () and identifier_tokens("return") == ()
    assert identifier_tokens("x") == ()


def test_chunks_are_definitions_and_module_code() -> None:
    found = [(p.name, p.kind, p.start, p.end) for p in pieces(GEOMETRY)]
    assert found == [
        ("<module>", "module", 0, 4),
        ("Polygon", "class", 7, 9),  # the decorator belongs to the class
        ("polygon_area", "function", 12, 15),
        ("circle_area", "function", 18, 19),
    ]


def test_long_class_is_split_into_header_and_methods_and_long_chunks_into_parts() -> None:
    methods = "".join(f"    def m{i}(self):\n" + "        x = 1\n" * 8 for i in range(10))
    text = "class Big:\n    '''Doc.'''\n    size = 3\n\n" + methods
    names = [p.name for p in pieces(text)]
    assert names[0] == "Big" and names[1:] == [f"Big.m{i}" for i in range(10)]
    long = "def long():\n" + "    y = 2\n" * 150
    parts = pieces(long)
    assert [p.name for p in parts] == ["long", "long (part 2)", "long (part 3)"]
    assert [(p.start, p.end) for p in parts] == [(0, 59), (60, 119), (120, 150)]


def test_text_that_does_not_parse_is_cut_at_top_level_definitions() -> None:
    broken = "import os\n\ndef half(:\n    pass\n\n@cache\ndef whole():\n    return 1\n"
    assert [(p.name, p.start, p.end) for p in pieces(broken)] == [
        ("<module>", 0, 0),
        ("half", 2, 3),
        ("whole", 5, 7),
    ]


def test_bm25_prefers_the_definition_over_uses_and_noise() -> None:
    index = Index()
    index.update("geometry.py", GEOMETRY)
    index.update("report.py", REPORT)
    index.update("noise.py", "def area_of_rug(w, h):\n    return w * h\n" * 3)
    hits = index.search("total = polygon_area(shape) + offset")
    assert hits[0].chunk.path == "geometry.py" and hits[0].chunk.name == "polygon_area"
    assert {h.chunk.path for h in hits[:3]} >= {"report.py"}
    assert index.text(hits[0].chunk).startswith("def polygon_area(polygon: Polygon)")
    assert [c.path for c in index.definitions("polygon_area")] == ["geometry.py"]


def test_updates_replace_only_changed_chunks_and_deletes_remove_them() -> None:
    index = Index()
    index.update("geometry.py", GEOMETRY)
    before = {c.name: c.id for c in index.chunks_of("geometry.py")}
    edited = GEOMETRY.replace("math.pi * radius**2", "3.14159 * radius * radius")
    index.update("geometry.py", "# new first line\n" + edited)
    after = {c.name: c for c in index.chunks_of("geometry.py")}
    assert after["polygon_area"].id == before["polygon_area"]  # unchanged: kept
    assert after["polygon_area"].start == 13  # but moved down a line
    assert after["circle_area"].id != before["circle_area"]
    assert index.search("radius radius")[0].chunk.name == "circle_area"
    assert index.text(after["circle_area"]).count("radius") == 3
    assert index.remove("geometry.py") and index.search("polygon_area circle_area") == []
    assert index.stats()["chunks"] == 0 and index.definitions("circle_area") == []


def test_dead_postings_are_compacted_without_changing_answers() -> None:
    index = Index()
    for i in range(30):
        index.update(f"m{i}.py", f"def fn_{i}(alpha):\n    return beta_{i}(alpha)\n")
    for round_ in range(5):
        for i in range(30):
            index.update(f"m{i}.py", f"def fn_{i}(alpha):\n    return beta_{i}(alpha) + {round_}\n")
    best = [(h.chunk.name, round(h.score, 4)) for h in index.search("beta_7 alpha", 3)]
    assert index.stats()["deadChunks"] == 150
    assert index.compact(min_dead=10)
    stats = index.stats()
    assert stats["deadChunks"] == 0 and stats["postings"] < 30 * 10
    after = [(h.chunk.name, round(h.score, 4)) for h in index.search("beta_7 alpha", 3)]
    assert after[0] == best[0] == ("fn_7", best[0][1])
    assert [score for _, score in after] == [score for _, score in best]  # the rest tie


def test_disk_chunks_are_read_back_and_dropped_once_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "geometry.py"
    path.write_text(GEOMETRY, encoding="utf-8")
    index = Index()
    index.update("geometry.py", GEOMETRY, stamp=file_stamp(path), absolute=path)
    (chunk,) = index.definitions("circle_area")
    assert "math.pi" in (index.text(chunk) or "")
    path.write_text(GEOMETRY + "\n# edited on disk\n", encoding="utf-8")
    assert index.text(chunk) is None  # stale: not shown until the file is indexed again


def test_walk_honours_excludes_size_and_file_limits(tmp_path: Path) -> None:
    for rel in ("a.py", "pkg/b.py", ".venv/lib/c.py", "node_modules/d.py", ".hidden/e.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    (tmp_path / "big.py").write_text("y = 2\n" * 400)
    (tmp_path / "notes.txt").write_text("not python")
    found = walk(tmp_path, Limits(max_files=10, max_file_bytes=1000))
    assert [rel for rel, _ in found.files] == ["a.py", "pkg/b.py"] and found.too_big == 1
    capped = walk(tmp_path, Limits(max_files=1))
    assert len(capped.files) == 1 and capped.over_limit == 2


def test_builder_answers_during_the_build_and_follows_buffers_and_disk(tmp_path: Path) -> None:
    root = generate(tmp_path / "ws", 600, seed=1)
    (root / "shapes.py").write_text(GEOMETRY, encoding="utf-8")
    builder = Builder(root, Limits()).start()
    answered_early = []
    while not builder.done.is_set():
        started = time.perf_counter()
        builder.index.search("polygon_area points", 4)  # answers with what it has
        answered_early.append((time.perf_counter() - started, builder.indexed))
        time.sleep(0.01)
    assert any(n < builder.total for _, n in answered_early)  # some queries came mid-build
    assert max(t for t, _ in answered_early) < 0.5
    assert builder.idle() and builder.stats()["files"] == 607  # 600 + 6 __init__ + shapes
    # an open buffer wins over the disk, and closing it goes back to the disk
    builder.buffer("shapes.py", GEOMETRY.replace("circle_area", "disc_area"))
    assert builder.idle() and builder.index.definitions("disc_area")
    builder.changed("shapes.py")  # a disk event for an open file is ignored
    assert builder.idle() and builder.index.definitions("disc_area")
    builder.closed("shapes.py")
    assert builder.idle() and builder.index.definitions("circle_area")
    # disk changes: an edit, a deletion, and a rescan that finds files changed behind its back
    (root / "shapes.py").write_text(GEOMETRY.replace("polygon_area", "mesh_area"))
    builder.changed("shapes.py")
    assert builder.idle() and builder.index.definitions("mesh_area")
    (root / "shapes.py").unlink()
    builder.deleted("shapes.py")
    assert builder.idle() and not builder.index.definitions("mesh_area")
    (root / "extra.py").write_text("def found_by_rescan():\n    pass\n")
    builder.rescan()
    assert builder.idle() and builder.index.definitions("found_by_rescan")
    builder.stop()
    builder.join(5)


def test_builder_does_not_starve_other_threads(tmp_path: Path) -> None:
    """The walk yields between batches: a thread ticking every 5 ms keeps ticking."""
    root = generate(tmp_path / "ws", 400, seed=2)
    ticks: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.005)
            now = time.perf_counter()
            ticks.append(now - last)
            last = now

    ticker = threading.Thread(target=tick)
    ticker.start()
    builder = Builder(root, Limits()).start()
    wait_until(builder.done.is_set, 60, "the build")
    stop.set()
    ticker.join()
    assert len(ticks) > 10 and sorted(ticks)[len(ticks) // 2] < 0.05
    builder.stop()


def test_completion_lookup_leaves_out_the_window_and_is_stable_within_a_line() -> None:
    index = Index()
    index.update("geometry.py", GEOMETRY)
    index.update("report.py", REPORT)
    lookup = CompletionContext(index).related("report.py")
    query = cx.RelatedQuery("area = polygon_area(shape)\n", first_line=0, last_line=5)
    found = lookup(query)
    assert found[0].label == "geometry.py"
    assert all(r.label != "report.py" for r in found)  # the window's own chunk is not repeated
    index.remove("geometry.py")
    assert lookup(query) == found  # same line, same answer (the prompt prefix stays put)
    other = cx.RelatedQuery("area = polygon_area(shape)\nx = 1\n", first_line=0, last_line=6)
    assert all(r.label != "geometry.py" for r in lookup(other))


def test_window_puts_workspace_chunks_in_the_snippet_budget() -> None:
    def related(query: cx.RelatedQuery) -> list[cx.RelatedCode]:
        assert "shape = load()" in query.text and "total" not in query.text
        return [cx.RelatedCode("geometry.py", "def polygon_area(p):\n    return 0.5 * p\n")]

    prefix = "import math\n" + "x = 1\n" * 40 + "shape = load()\ntotal = "
    window = cx.build_window(
        prefix, "\n", budget=120, count=cx.approx_tokens, snippet_budget=40, related=related
    )
    assert window.snippets == (
        "# geometry.py:\n# def polygon_area(p):\n#     return 0.5 * p\nimport math\n"
    )
    assert window.prefix.startswith(window.snippets) and window.prefix.endswith("total = ")
    tight = cx.build_window(
        prefix, "\n", budget=120, count=cx.approx_tokens, snippet_budget=12, related=related
    )
    assert tight.snippets == "import math\n"  # a chunk shows a few lines, or not at all


def test_council_snippets_bring_definitions_tests_and_similar_code() -> None:
    index = Index()
    index.update("geometry.py", GEOMETRY)
    index.update(
        "tests/test_report.py",
        "from report import describe\n\n\ndef test_describe():\n    assert describe(sq)\n",
    )
    index.update("labels.py", 'def describe_label(label):\n    return f"label {label}"\n')
    index.update("report.py", REPORT)
    snippets = council_snippets(index, path="report.py", text=REPORT, symbol="describe")
    reasons = [(s.reason, s.path, s.name) for s in snippets]
    assert reasons[0] == ("definition", "geometry.py", "polygon_area")
    assert ("test", "tests/test_report.py", "test_describe") in reasons
    assert ("similar", "labels.py", "describe_label") in reasons
    assert snippets[0].start_line == 13 and snippets[0].text.startswith("def polygon_area")
    tiny = council_snippets(index, path="report.py", text=REPORT, symbol="describe", budget=20)
    assert sum(cx.approx_tokens(s.text) for s in tiny) <= 20
    assert used_names(REPORT.split("\n\n\n")[1]) == ["polygon_area"]
    assert is_test_path("tests/helpers.py") and not is_test_path("testing_tools.py")


def test_prompts_show_workspace_code_to_the_researcher_and_the_generator() -> None:
    index = Index()
    index.update("geometry.py", GEOMETRY)
    context = RequestContext(file_path="report.py", file_text=REPORT, symbol="describe")
    context.workspace_snippets = council_snippets(
        index, path="report.py", text=REPORT, symbol="describe"
    )
    request = CouncilRequest(query="q", mode="generate", context=context)
    plan = Plan(goal="g", tasks=[])
    for prompt in (
        research_prompt(request, plan, []),
        generate_prompt(request, plan, None, None, [], "report.py"),
    ):
        assert "## Workspace code" in prompt
        assert "### geometry.py:13-16 (definition of `polygon_area`" in prompt
        assert "def polygon_area(polygon: Polygon) -> float:" in prompt
    bare = CouncilRequest(query="q", mode="generate", context=RequestContext(file_text=REPORT))
    assert "Workspace code" not in generate_prompt(bare, plan, None, None, [], "report.py")


def test_council_run_builds_a_one_shot_index(tmp_path: Path) -> None:
    from council.workspace.council_context import one_shot
    from providers.settings import WorkspaceConfig

    (tmp_path / "geometry.py").write_text(GEOMETRY, encoding="utf-8")
    (tmp_path / "report.py").write_text(REPORT, encoding="utf-8")
    found = one_shot(tmp_path, WorkspaceConfig(), path="report.py", text=REPORT, symbol="describe")
    assert (found[0].reason, found[0].name) == ("definition", "polygon_area")
