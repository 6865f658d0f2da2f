#!/usr/bin/env python3
"""Renders a `fanout report` HTML file in headless Chromium and checks what it shows.

    report_check.py REPORT.html --expect EXPECT.json --screenshot OUT.png

EXPECT.json:

    {"chunks": 12,                 # <rect class="chunk"> in #timeline (one per attempt record)
     "stragglers": 1,              # of them with class "straggler"
     "numbers": ["6,001,215", "$0.00163"],   # each in the text of #summary
     "reject_rules": ["format", "min: 0"],   # each a rule named in #rejects
     "partitions": 8,              # partitions in #partitions (rows shown: at most 1,000)
     "file_sizes": {"files": "120", "size-median": "9.8 kB"},  # #file-layout: the first
                                   # stage's cell in the row of each data-figure
     "text": {"cost": ["no estimate recorded"]}}   # optional: strings per section id

Checks, besides those: every section is there and the script ran to its end; the file
loads nothing from anywhere (no src/href/url() but in-page anchors and data: URIs); the
throughput lines have real shapes; no element was made from the data (the only scripts
are the page's own two, reject examples hold text only, and each example's raw text is
shown as text); the screenshot is a PNG of the window's size with many colours, not a
blank page, with the chunk (and straggler) colours of the timeline in it.

Exit 0 when every check passes, 1 with the failures listed, 2 when it cannot run
(no Chromium: infra/chromium.sh installs it). Needs Pillow for the screenshot checks.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from html.parser import HTMLParser

SECTIONS = ["summary", "timeline", "throughput", "rejects", "partitions", "cost", "aggregate"]
MAX_TABLE_ROWS = 1000  # the template's cap on table rows
MAX_RAW_CHARS = 600  # the template shows this much of a reject's raw text
CHUNK_RGB = (0x3B, 0x82, 0xF6)  # --chunk in the template
STRAGGLER_RGB = (0xF9, 0x73, 0x16)  # --straggler
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1",
    "--mute-audio", "--no-default-browser-check",
]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}


class Node:
    __slots__ = ("tag", "attrs", "children", "parent")

    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.children, self.parent = tag, dict(attrs), [], parent

    def classes(self):
        return set((self.attrs.get("class") or "").split())

    def iter(self):
        stack = [self]
        while stack:
            n = stack.pop()
            yield n
            stack.extend(c for c in reversed(n.children) if isinstance(c, Node))

    def find_all(self, tag=None, cls=None):
        return [n for n in self.iter() if (tag is None or n.tag == tag) and (cls is None or cls in n.classes())]

    def by_id(self, ident):
        return next((n for n in self.iter() if n.attrs.get("id") == ident), None)

    def text(self, sep=" "):
        """The text below, with `sep` between elements (so "Rows read" and "6,001,215"
        in two elements never read as one word)."""
        out, stack = [], [self]
        while stack:
            n = stack.pop()
            if isinstance(n, str):
                out.append(n)
            elif n.tag not in ("script", "style"):
                out.append(sep)
                stack.append(sep)
                stack.extend(reversed(n.children))
        return "".join(out)


class TreeBuilder(HTMLParser):
    """A forgiving DOM from Chromium's serialization (well formed: it wrote it)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", [], None)
        self.cur = self.root

    def handle_starttag(self, tag, attrs):
        n = Node(tag, attrs, self.cur)
        self.cur.children.append(n)
        if tag not in VOID:
            self.cur = n

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, attrs, self.cur))

    def handle_endtag(self, tag):
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        if n is not None and n.parent is not None:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def squash(s):
    return re.sub(r"\s+", " ", s).strip()


def find_chromium(explicit):
    for c in [explicit, os.environ.get("CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"]:
        if c and shutil.which(c):
            return shutil.which(c)
    return None


class PageHung(Exception):
    pass


def run_chromium(chromium, profile, args, url, timeout):
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url]
    # Its own session: on a timeout the whole browser (renderer, zygote, GPU helper) goes,
    # not just the process we started.
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise PageHung(f"the page did not finish within {timeout} s (a script that never ends, or a dialog "
                       f"such as alert() opened by data that became markup): {' '.join(cmd)}")
    if p.returncode != 0:
        tail = err.decode("utf-8", "replace")[-3000:]
        raise SystemExit(f"chromium failed (exit {p.returncode}): {' '.join(cmd)}\n{tail}")
    return out.decode("utf-8", "replace")


def embedded_data(html):
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    if not m:
        return None, "no <script type=\"application/json\" id=\"report-data\"> element"
    if m.group(1).strip() == "/*FANOUT_REPORT_DATA*/":
        return None, "the data placeholder was never replaced"
    try:
        return json.loads(m.group(1)), None
    except ValueError as e:
        return None, f"the embedded data is not JSON: {e}"


def static_checks(html, fail):
    page = re.sub(r'(<script type="application/json" id="report-data">).*?(</script>)', r"\1\2", html, flags=re.S)
    for m in re.finditer(r"""\b(src|href|action|srcset|poster|data)\s*=\s*["']?([^"'\s>]*)""", page, re.I):
        attr, value = m.group(1).lower(), m.group(2)
        if attr == "data":
            continue
        if not value.startswith("#") and not value.startswith("data:"):
            fail(f"the page refers to a resource outside itself: {m.group(0)!r}")
    for m in re.finditer(r"url\(\s*['\"]?([^)'\"]*)", page, re.I):
        if not m.group(1).startswith(("data:", "#")):
            fail(f"the styles load a resource: {m.group(0)!r}")
    if re.search(r"@import", page, re.I):
        fail("the styles use @import")
    if re.search(r"<(link|iframe|object|embed|img)\b", page, re.I):
        fail("the page has a link/iframe/object/embed/img element")
    if re.search(r"\b(fetch|XMLHttpRequest|WebSocket|EventSource|importScripts)\s*\(", page):
        fail("the page's script can make network requests")


def path_points(d):
    nums = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", d or "")]
    return list(zip(nums[0::2], nums[1::2]))


def check_dom(dom, data, expect, fail, note):
    root = TreeBuilder()
    root.feed(dom)
    doc = root.root
    body = next(iter(doc.find_all("body")), None)
    if body is not None and "data-injected" in body.attrs:
        fail(f"markup from the data ran a script (body data-injected={body.attrs['data-injected']!r})")
    if body is None or body.attrs.get("data-rendered") != "true":
        fatal = doc.find_all("div", "fatal")
        fail("the report's script did not run to its end (body lacks data-rendered=\"true\")"
             + (": " + squash(fatal[0].text()) if fatal else ""))
    if body is not None and body.attrs.get("data-render-ms"):
        note(f"rendered in {body.attrs['data-render-ms']} ms")
    sections = {}
    for ident in SECTIONS:
        s = doc.by_id(ident)
        if s is None:
            fail(f"section #{ident} is missing")
        sections[ident] = s
    note(f"sections: {', '.join('#' + s for s in SECTIONS if sections.get(s) is not None)}")

    # Only the page's own scripts exist: a data string that became markup would add more.
    scripts = doc.find_all("script")
    if len(scripts) != 2:
        fail(f"expected the page's 2 <script> elements, found {len(scripts)} (data injected as markup?)")

    tl = sections.get("timeline")
    if tl is not None:
        rects = [r for r in tl.find_all("rect") if "chunk" in r.classes()]
        strag = [r for r in rects if "straggler" in r.classes()]
        if "chunks" in expect and len(rects) != expect["chunks"]:
            fail(f"#timeline: {len(rects)} rect.chunk, expected {expect['chunks']}")
        if "stragglers" in expect and len(strag) != expect["stragglers"]:
            fail(f"#timeline: {len(strag)} rect.chunk.straggler, expected {expect['stragglers']}")
        untitled = [r for r in rects if not any(isinstance(c, Node) and c.tag == "title" for c in r.children)]
        if untitled:
            fail(f"#timeline: {len(untitled)} chunk bars without a <title> tooltip")
        axis_labels = [squash(t.text()) for t in tl.find_all("text")]
        if rects and not any("seconds" in t for t in axis_labels):
            fail("#timeline: no axis in seconds")
        note(f"timeline: {len(rects)} chunk bars, {len(strag)} stragglers")

    tp = sections.get("throughput")
    if tp is not None:
        series = tp.find_all("path", "series")
        if expect.get("chunks", 0) > 0:
            if len(series) < 2:
                fail(f"#throughput: {len(series)} path.series, expected at least 2 (MB/s and rows/s)")
            for p in series:
                pts = path_points(p.attrs.get("d"))
                ys = {round(y, 1) for _, y in pts}
                if len(pts) < 10 or len(ys) < 2:
                    fail(f"#throughput: path.series {sorted(p.classes())} is trivial ({len(pts)} points, {len(ys)} heights)")
            note(f"throughput: {len(series)} series of {min((len(path_points(p.attrs.get('d'))) for p in series), default=0)}+ points")
        elif series:
            fail("#throughput: series drawn for a job without chunk records")

    sm = sections.get("summary")
    if sm is not None:
        text = squash(sm.text())
        missing = [n for n in expect.get("numbers", []) if n not in text]
        if missing:
            fail(f"#summary lacks {missing}; its text: {text[:400]}")
        else:
            note(f"summary shows {expect.get('numbers', [])}")

    rj = sections.get("rejects")
    if rj is not None:
        rules = [squash(n.text()) for n in rj.find_all(cls="rule-name")]
        missing = [r for r in expect.get("reject_rules", []) if r not in rules]
        if missing:
            fail(f"#rejects lacks the rules {missing}; it shows {rules}")
        for ex in rj.find_all(cls="example"):
            odd = sorted({n.tag for n in ex.iter() if n is not ex and n.tag not in ("div", "span", "pre")})
            if odd:
                fail(f"#rejects: an example holds elements {odd}: data became markup")
        raws = [n.text("") for n in rj.find_all("pre", "raw")]
        if data is not None:
            want = [
                str(x["raw"])
                for r in (data.get("rejects") or {}).get("by_rule") or []
                for x in (r.get("examples") or [])[:3]
                if x.get("raw") is not None
            ]
            shown = [w for w in want if any(w[:MAX_RAW_CHARS] in r for r in raws)]
            for w in want:
                if w not in shown:
                    fail(f"#rejects does not show the raw text {w[:80]!r} as text")
            note(f"rejects: rules {rules}, {len(shown)} of {len(want)} raw examples shown as text")

    pt = sections.get("partitions")
    if pt is not None and "partitions" in expect:
        n = expect["partitions"]
        rows = pt.find_all("tr", "partition")
        if len(rows) != min(n, MAX_TABLE_ROWS):
            fail(f"#partitions: {len(rows)} partition rows, expected {min(n, MAX_TABLE_ROWS)}")
        tbl = pt.by_id("partitions-table")
        if n and (tbl is None or tbl.attrs.get("data-partitions") != str(n)):
            fail(f"#partitions: the table does not count {n} partitions")
        if pt.by_id("file-sizes") is None:
            fail("#partitions: no #file-sizes histogram")
        elif n and not pt.by_id("file-sizes").find_all("rect", "bar"):
            fail("#file-sizes: no bars")
        note(f"partitions: {len(rows)} rows")
    if pt is not None and "file_sizes" in expect:
        layout = pt.by_id("file-layout")
        if layout is None:
            fail("#partitions: no #file-layout table of files per partition and file sizes")
        else:
            shown = {
                tr.attrs.get("data-figure"): [squash(td.text()) for td in tr.find_all("td", "num")]
                for tr in layout.find_all("tr", "figure")
            }
            for figure, want in expect["file_sizes"].items():
                got = (shown.get(figure) or [None])[0]
                if got != want:
                    fail(f"#file-layout: {figure} shows {got!r}, expected {want!r}")
            note(f"file layout: {len(shown)} figures checked against {len(expect['file_sizes'])} expected")

    for ident, needles in (expect.get("text") or {}).items():
        s = doc.by_id(ident)
        text = squash(s.text()) if s is not None else ""
        for needle in needles:
            if needle not in text:
                fail(f"#{ident} lacks {needle!r}")


def check_png(path, size, expect, fail, note):
    try:
        from PIL import Image
    except ImportError:
        fail("Pillow is not installed: cannot check the screenshot (tests/py/requirements.txt has it)")
        return
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            fail(f"{path} is not a PNG")
            return
    im = Image.open(path)
    im.load()
    if im.size != size:
        fail(f"screenshot is {im.size[0]}x{im.size[1]}, expected {size[0]}x{size[1]}")
    rgb = im.convert("RGB")
    colors = rgb.getcolors(maxcolors=1 << 20) or []
    total = rgb.size[0] * rgb.size[1]
    top = max((c for c, _ in colors), default=total)
    if len(colors) < 200:
        fail(f"screenshot has only {len(colors)} distinct colours: blank or unstyled")
    if top > 0.9 * total:
        fail(f"screenshot is {100 * top / total:.0f}% one colour: nearly blank")

    def near(target, tol=24):
        return sum(c for c, px in colors if all(abs(a - b) <= tol for a, b in zip(px, target)))

    chunk_px, strag_px = near(CHUNK_RGB), near(STRAGGLER_RGB)
    if expect.get("chunks", 0) > 0 and chunk_px < 100:
        fail(f"screenshot shows almost no chunk-bar colour ({chunk_px} px): the timeline is not visible")
    if expect.get("stragglers", 0) > 0 and strag_px < 30:
        fail(f"screenshot shows almost no straggler colour ({strag_px} px)")
    note(f"screenshot {im.size[0]}x{im.size[1]}: {len(colors)} colours, {chunk_px} chunk px, {strag_px} straggler px")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html")
    ap.add_argument("--expect", required=True)
    ap.add_argument("--screenshot", required=True)
    ap.add_argument("--chromium", help="the browser (default $CHROMIUM or /usr/bin/chromium)")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=4200)
    ap.add_argument("--timeout", type=int, default=60, help="seconds per Chromium run")
    ap.add_argument("--keep-dom", help="write the rendered DOM here")
    a = ap.parse_args()

    chromium = find_chromium(a.chromium)
    if not chromium:
        print("report_check: no Chromium (/usr/bin/chromium): run infra/chromium.sh", file=sys.stderr)
        return 2
    with open(a.expect, encoding="utf-8") as f:
        expect = json.load(f)
    with open(a.html, encoding="utf-8") as f:
        html = f.read()

    failures, notes = [], []
    fail, note = failures.append, notes.append
    static_checks(html, fail)
    data, problem = embedded_data(html)
    if problem:
        fail(problem)

    url = "file://" + os.path.abspath(a.html)
    profile = tempfile.mkdtemp(prefix="fanout-chromium-")
    try:
        try:
            dom = run_chromium(chromium, profile, ["--virtual-time-budget=5000", "--dump-dom"], url, a.timeout)
            if os.path.exists(a.screenshot):
                os.remove(a.screenshot)
            run_chromium(chromium, profile, [f"--window-size={a.width},{a.height}", "--virtual-time-budget=5000",
                                             f"--screenshot={os.path.abspath(a.screenshot)}"], url, a.timeout)
        except PageHung as e:
            print(f"report_check: {a.html}: FAIL {e}", file=sys.stderr)
            return 1
        except SystemExit as e:
            print(f"report_check: {e}", file=sys.stderr)
            return 2
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if a.keep_dom:
        with open(a.keep_dom, "w", encoding="utf-8") as f:
            f.write(dom)

    check_dom(dom, data, expect, fail, note)
    if not os.path.exists(a.screenshot):
        fail(f"chromium wrote no screenshot to {a.screenshot}")
    else:
        check_png(a.screenshot, (a.width, a.height), expect, fail, note)

    for n in notes:
        print(f"  --  {n}")
    if failures:
        print(f"report_check: {a.html}: {len(failures)} problem(s):", file=sys.stderr)
        for f_ in failures:
            print(f"  FAIL {f_}", file=sys.stderr)
        return 1
    print(f"report_check: {a.html}: every check passed (screenshot {a.screenshot})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
