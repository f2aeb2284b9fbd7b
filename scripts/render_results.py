#!/usr/bin/env python
"""Rewrite the docs' result sections from the published results in docs/results/*.json.

    python scripts/render_results.py            # rewrite every <!-- results:NAME --> section (README.md, docs/*.md)
    python scripts/render_results.py --check    # exit 1 when a section differs from its JSON

The JSON files are written by the commands that measure them (run_pipeline --results,
compare_methods.py --results, benchmark.py --results); nothing in these sections is typed by hand.
"""
import argparse
import sys
from pathlib import Path

from wsss.cli import run_script


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file", action="append", default=None, help="only this file (repeatable); default: README.md and docs/*.md")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 when a section is stale")
    a = p.parse_args()
    from tools.published import documents, load_published, marked_sections, rewrite
    from wsss.fileio import atomic_write_text

    published = load_published()
    stale_files = []
    for path in [Path(f) for f in a.file] if a.file else documents():
        text = path.read_text()
        sections = marked_sections(text)
        if not sections:
            continue
        new = rewrite(text, published)
        stale = [name for name, body in sections.items() if marked_sections(new)[name] != body]
        if a.check:
            print(f"{path}: " + (f"stale result sections: {', '.join(stale)}" if stale else f"{len(sections)} result sections match docs/results"),
                  file=sys.stderr if stale else sys.stdout)
            stale_files += [path] if stale else []
            continue
        if new != text:
            atomic_write_text(path, new)
        print(f"{path}: rewrote {', '.join(stale) or 'nothing (up to date)'}")
    if stale_files:
        print("run scripts/render_results.py", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    run_script(main)
