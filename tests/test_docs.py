"""The docs stay true: the API reference is current, guide links resolve, README commands hold."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_api_reference_is_current():
    res = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_api.py"), "--check"])
    assert res.returncode == 0, "docs/api.md is out of date: run python docs/gen_api.py"


def test_doc_links_resolve():
    for md in [ROOT / "README.md", *ROOT.glob("docs/**/*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)\)", md.read_text()):
            assert (md.parent / target).exists(), f"{md.name}: broken link {target}"


def test_readme_starts_with_the_two_commands_and_ci_runs_the_second():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[0] == "```bash"
    assert lines[1].startswith("pip install . && tilefuse demo")
    assert lines[2] == 'pip install ".[test]" && python -m pytest'
    assert lines[2] in (ROOT / ".ci" / "run").read_text()
