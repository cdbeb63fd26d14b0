#!/usr/bin/env python3
"""Fail a test run that skipped anything: `junit_no_skips.py RESULTS.xml [WHAT]`.

The GPU tests skip where there is no CUDA; under the emulator there always is, so a skip
there means a test that silently stopped running. Reads pytest's --junitxml; exit status 1
if any test was skipped, failed or errored, or if none ran.
"""
import sys
import xml.etree.ElementTree as ET


def counts(path):
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    return {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}, \
        sorted({(e.get("message") or "")[:300] for e in root.iter("skipped")})


def main(path, what="tests"):
    c, reasons = counts(path)
    ran = c["tests"] - c["skipped"]
    print(f"{what}: {ran} ran, {c['skipped']} skipped, {c['failures']} failed, {c['errors']} errors")
    for reason in reasons:
        print(f"  skipped: {reason}")
    bad = c["tests"] == 0 or c["skipped"] or c["failures"] or c["errors"]
    if bad:
        print(f"{what}: every test must run and pass here (none may skip)", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
