"""Replaces one section of a Markdown report: from its `## ` heading to the next `## `
heading (or the end), leaving the sections other benchmarks own as they are. A missing
section is appended.

Usage: replace_section.py DOCS_FILE SECTION_FILE HEADING
"""
import sys


def main():
    path, section, heading = sys.argv[1:]
    new = open(section).read().rstrip("\n") + "\n"
    try:
        lines = open(path).read().split("\n")
    except FileNotFoundError:
        lines = []
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    if start is None:
        text = "\n".join(lines).rstrip("\n")
        text = (text + "\n\n" if text else "") + new
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        before = "\n".join(lines[:start]).rstrip("\n")
        after = "\n".join(lines[end:]).strip("\n")
        text = (before + "\n\n" if before else "") + new + ("\n" + after + "\n" if after else "")
    open(path, "w").write(text)


if __name__ == "__main__":
    main()
