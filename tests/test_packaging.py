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


def test_every_exported_name_imports():
    import lt_kit
    assert lt_kit.__all__
    for name in lt_kit.__all__:
        assert getattr(lt_kit, name) is not None, name
    from lt_kit import compare_runs, fit, logit_adjust, score_run, tau_normalize, tde_logits  # noqa: F401


def test_a_plain_wheel_holds_every_subpackage(tmp_path):
    """A non-editable wheel installs every subpackage (an editable install would hide a missing one)."""
    import subprocess
    import sys
    import zipfile
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("lt_kit-*.whl"))
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    packages = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "lt_kit").rglob("__init__.py")}
    assert {p.parent.relative_to(site).as_posix() for p in site.rglob("__init__.py")} == packages
    code = ("import lt_kit, lt_kit.views.explorer, lt_kit.views.report, lt_kit.training.score, lt_kit.cli; "
            "print(lt_kit.__file__)")
    run = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {code}"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().startswith(str(site))


# Rooms from the bottom up: a module may import from its own room and from rooms below it, never above.
LAYERS = [{"maths", "errors", "folders"}, {"data", "models", "pretrained"}, {"config", "methods", "precision"}, {"runs"}, {"evaluation"},
          {"training"}, {"views"}, {"demo", "cli", "__init__", "__main__"}]


def test_imports_go_one_way_down_toward_the_maths():
    import ast
    level = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}
    bad = []
    for path in (ROOT / "lt_kit").rglob("*.py"):
        rel = path.relative_to(ROOT / "lt_kit").with_suffix("")
        room = rel.parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                parts = name.split(".")
                if parts[0] == "lt_kit" and len(parts) > 1 and parts[1] != room and level[parts[1]] > level[room]:
                    bad.append(f"{rel} imports {name}")
    assert not bad, "\n".join(bad)
