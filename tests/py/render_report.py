#!/usr/bin/env python3
"""Fills the report template with a data file, as `fanout report` does (tests without Rust).

    render_report.py TEMPLATE DATA.json OUT.html [--escape lt|slash]

The template's line `<script type="application/json" id="report-data">/*FANOUT_REPORT_DATA*/</script>`
is replaced by the same element holding the data as compact JSON.

Inside a <script> element the HTML parser ends the element at `</script` and, after
`<!--`, treats `<script` as opening a nested script, after which the real `</script>`
no longer closes it: a reject whose raw text holds `<!--<script>` would swallow the rest
of the page. So every `<` is written `\\u003c` (`--escape lt`, the default): a JSON string
escape, read back unchanged by JSON.parse, and `<` only ever occurs inside JSON strings.
`--escape slash` writes only `</` as `<\\/`, which guards `</script>` but not `<!--`: kept
to show that failure (tests/py/report_sample.json holds such a raw text).
"""
import argparse
import json
import sys

PLACEHOLDER = '<script type="application/json" id="report-data">/*FANOUT_REPORT_DATA*/</script>'


def embed(data, escape: str = "lt") -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    if escape == "slash":
        return text.replace("</", "<\\/")
    return text.replace("<", "\\u003c")


def render(template: str, data, escape: str = "lt") -> str:
    lines = template.split("\n")
    hits = [i for i, line in enumerate(lines) if line.strip() == PLACEHOLDER]
    if len(hits) != 1:
        raise SystemExit(f"the template must hold the placeholder line exactly once, found {len(hits)}")
    lines[hits[0]] = f'<script type="application/json" id="report-data">{embed(data, escape)}</script>'
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description="Fill the fanout report template with a data file.")
    ap.add_argument("template")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--escape", choices=("lt", "slash"), default="lt")
    a = ap.parse_args()
    with open(a.template, encoding="utf-8") as f:
        template = f.read()
    with open(a.data, encoding="utf-8") as f:
        data = json.load(f)
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(render(template, data, a.escape))
    return 0


if __name__ == "__main__":
    sys.exit(main())
