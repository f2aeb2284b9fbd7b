"""docs/crf_torch.md's tables, rendered from docs/results/crf_agreement.json and
crf_throughput.json by the tools that publish them (tests/test_torch_crf.py checks they are).

    python -m tools.crf_results          # re-render the tables after publishing new results

Until wsss.results registers these renderers, the page marks its tables with
``<!-- crf_torch:NAME -->`` rather than the project's ``results:`` markers.
"""
from __future__ import annotations

from tools import crf_agreement, crf_throughput
from tools.crf_agreement import REPO

DOC = REPO / "docs" / "crf_torch.md"
DOC_MARKER = r"(<!-- crf_torch:(\w+) -->\n)(.*?)(<!-- /crf_torch:\2 -->)"


def doc_sections(text: str) -> dict[str, str]:
    import re

    return {m.group(2): m.group(3) for m in re.finditer(DOC_MARKER, text, re.DOTALL)}


def render_published(name: str) -> str:
    """The table of docs/crf_torch.md named ``name``, from docs/results/<name>.json."""
    import json

    from wsss.results import RESULTS_DIR

    doc = json.loads((RESULTS_DIR / f"{name}.json").read_text())
    return {"crf_agreement": crf_agreement.render, "crf_throughput": crf_throughput.render}[name](doc)


def rewrite_doc() -> None:
    """Re-render docs/crf_torch.md's tables from docs/results (after publishing new results)."""
    import re

    text = DOC.read_text()
    DOC.write_text(re.sub(DOC_MARKER, lambda m: m.group(1) + render_published(m.group(2)) + m.group(4), text, flags=re.DOTALL))


if __name__ == "__main__":
    rewrite_doc()
    print(f"rewrote {DOC}")
