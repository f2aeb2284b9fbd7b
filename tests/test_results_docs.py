"""Every result table the README and docs/*.md quote is rendered from a JSON file in docs/results that the
command measuring it wrote (with the machine and the commit): a number typed by hand, or a
JSON changed without re-rendering, fails here."""
import json
import re

from conftest import REPO
from tools.published import RENDERERS, documents, load_published, marked_sections, render


def test_result_sections_equal_their_published_json():
    docs = load_published()
    where: dict[str, list[str]] = {}
    for path in documents(REPO):
        for name, body in marked_sections(path.read_text()).items():
            where.setdefault(name, []).append(path.name)
            assert body == render(name, docs), f"{path.name}: section {name} differs from docs/results (run scripts/render_results.py)"
    assert set(where) == set(RENDERERS), sorted(where)  # every table is quoted somewhere ...
    assert all(len(files) == 1 for files in where.values()), where  # ... and in one place only
    assert "demo" in marked_sections((REPO / "README.md").read_text())


def test_published_results_say_what_made_them():
    docs = load_published()
    assert set(docs) >= {"demo", "compare", "benchmark"}
    for name, doc in docs.items():
        assert doc["kind"] == name and doc["command"].startswith("python scripts/"), name
        assert doc["commit"]["sha"] and re.fullmatch(r"[0-9a-f]{40}", doc["commit"]["sha"]), name
        assert doc["made_on"]["cores"] and doc["made_on"]["machine"] and doc["made_on"]["torch"], name
        assert "placeholder" not in doc or doc["placeholder"], name  # a placeholder says where its numbers came from


def test_a_changed_number_shows_in_the_rendered_section():
    docs = load_published()
    doc = json.loads(json.dumps(docs["demo"]))
    doc["data"]["numbers"]["cam_miou"] = 0.1234
    assert "| CAM mIoU (best threshold) | 12.34 @" in render("demo", {**docs, "demo": doc})
    assert render("demo", {**docs, "demo": doc}) != render("demo", docs)
