"""The two dependency lists agree, and CI runs exactly the README's test command."""
import re
import tomllib

import yaml

from conftest import ROOT


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): r for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    have = {}
    for dep in env["dependencies"]:
        for r in (dep["pip"] if isinstance(dep, dict) else [dep]):
            if not r.startswith("-e") and _name(r) not in ("python", "pip"):
                have[_name(r)] = r.replace(" ", "")
    assert set(have) == set(wanted)
    for name, req in wanted.items():                    # same version bounds too
        assert have[name] == req.replace(" ", ""), name


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"^\s*(make \w+)\s*(?:#.*)?$", readme, flags=re.M)
    assert "make demo" in commands and "make test" in commands
    assert [l for l in ci.splitlines() if l and not l.startswith(("#", "set ", "cd "))] == ["make test"]
