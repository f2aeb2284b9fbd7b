#!/usr/bin/env python
"""Rewrite the README's result sections from the published results in docs/results/*.json.

    python scripts/render_results.py            # rewrite README.md's <!-- results:NAME --> sections
    python scripts/render_results.py --check    # exit 1 when a section differs from its JSON

The JSON files are written by the commands that measure them (run_pipeline --results,
compare_methods.py --results, benchmark.py --results); nothing in these sections is typed by hand.
"""
import argparse
import sys
from pathlib import Path

from wsss.stages import run_script


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readme", default=None, help="default: the repository's README.md")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 when a section is stale")
    a = p.parse_args()
    from wsss.fileio import atomic_write_text
    from wsss.results import REPO, load_published, marked_sections, rewrite

    readme = Path(a.readme or REPO / "README.md")
    text = readme.read_text()
    new = rewrite(text, load_published())
    stale = [name for name, body in marked_sections(text).items() if marked_sections(new)[name] != body]
    if a.check:
        if stale:
            print(f"{readme}: stale result sections: {', '.join(stale)} (run scripts/render_results.py)", file=sys.stderr)
            raise SystemExit(1)
        print(f"{readme}: {len(marked_sections(text))} result sections match docs/results")
        return
    if new != text:
        atomic_write_text(readme, new)
    print(f"{readme}: rewrote {', '.join(stale) or 'nothing (up to date)'}")


if __name__ == "__main__":
    run_script(main)
