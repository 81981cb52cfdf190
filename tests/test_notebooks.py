"""The three notebooks: their form (parameters cell, no code in cells, no outputs), their declared parameters
against lt_kit's and every preset's, and real papermill runs on the embedded data at smoke size."""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import nbformat
import papermill as pm
import pytest
import yaml

from lt_kit.config import PARAMS, load_params_file, resolve
from lt_kit.errors import LtKitError
from lt_kit.views.notebook import (
    COMPARE_PARAMS,
    DIRECTION_PARAMS,
    EXPLORER_PARAMS,
    PATH_PARAMS,
    TRAIN_ONLY,
    check_train_parameters,
    resolve_path,
)

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks"
NOTEBOOKS = {"train": [*PARAMS, *TRAIN_ONLY], "tde_explorer": list(EXPLORER_PARAMS),
             "momentum_direction": list(DIRECTION_PARAMS), "compare": list(COMPARE_PARAMS)}
PRESETS = sorted((ROOT / "params").glob("*.yaml"))


def read(name: str):
    return nbformat.read(NB / f"{name}.ipynb", as_version=4)


def parameters_cell(nb):
    return next(c for c in nb.cells if c.cell_type == "code")


def cell_defaults(name: str) -> dict:
    """The notebook's parameters cell executed on its own: the values a run starts from."""
    ns: dict = {}
    exec(parameters_cell(read(name)).source, ns)
    return {k: v for k, v in ns.items() if k not in ("__builtins__", "Optional")}


# --------------------------------------------------------------------------- form
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_form(name):
    nb = read(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell must be tagged 'parameters'"
    for stmt in ast.parse(code[0].source).body:               # flat, typed literals only
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "typing":
            continue                                          # Optional, for papermill's annotation parser
        assert isinstance(stmt, ast.AnnAssign), ast.unparse(stmt)
        ast.literal_eval(stmt.value)
    for c in code:
        assert c.outputs == [] and c.execution_count is None, "commit notebooks without outputs"
        assert not [n for n in ast.walk(ast.parse(c.source)) if isinstance(n, (ast.FunctionDef, ast.ClassDef,
                                                                             ast.Lambda))], "no def/class in cells"
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_declared_parameters(name):
    """papermill's own reading of the parameters cell names exactly what lt_kit checks, each with help."""
    declared = pm.inspect_notebook(str(NB / f"{name}.ipynb"))
    missing, extra = sorted(set(NOTEBOOKS[name]) - set(declared)), sorted(set(declared) - set(NOTEBOOKS[name]))
    assert not missing and not extra, ("the parameters cell and lt_kit.notebook disagree; add or remove lines in "
                                       f"the parameters cell (missing: {missing}, extra: {extra})")
    for p in declared.values():
        assert p["help"], f"{p['name']} has no inline help comment"
    if name == "train":
        for key, (_, typ, _) in PARAMS.items():
            assert typ.__name__ in declared[key]["inferred_type_name"], (key, declared[key])


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_uses_declared_parameters_only(preset):
    declared = pm.inspect_notebook(str(NB / "train.ipynb"))
    unknown = set(yaml.safe_load(preset.read_text()) or {}) - set(declared)
    assert not unknown, f"{preset.name} sets {sorted(unknown)}, which train.ipynb does not declare"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_jupytext_pair_in_step(name):
    jupytext = pytest.importorskip("jupytext")
    paired = NB / f"{name}.py"
    if not paired.exists():
        pytest.skip("no paired .py")
    py = [(c.cell_type, c.source) for c in jupytext.read(paired).cells]
    nb = [(c.cell_type, c.source) for c in read(name).cells]
    assert py == nb, f"notebooks/{name}.py and .ipynb differ: run `jupytext --sync notebooks/{name}.ipynb`"


# --------------------------------------------------------------------------- docs/notebooks.md against the cells
def doc_tables() -> dict[str, dict[str, list[str]]]:
    """docs/notebooks.md's parameter tables: notebook name -> parameter -> its cells (type, default, meaning).
    A table belongs to the notebook named (as `NAME.ipynb`) in the ``##`` heading above it."""
    tables: dict[str, dict[str, list[str]]] = {}
    name = None
    for line in (ROOT / "docs" / "notebooks.md").read_text().splitlines():
        if line.startswith("## "):
            name = next((n for n in NOTEBOOKS if f"`{n}.ipynb`" in line), None)
        elif name and line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            tables.setdefault(name, {})[cells[0].strip("`")] = cells[1:]
    return tables


def effective_default(name: str, key: str):
    """The value a run gets from the cell left as it is: the cell's literal, or for an lt_kit parameter left
    at None, what resolve gives it (the recipe of the cell's data set, else lt_kit's default)."""
    cell = cell_defaults(name)
    if name == "train" and cell[key] is None and key in PARAMS:
        return resolve({k: v for k, v in cell.items() if k in PARAMS})[key]
    return cell[key]


def test_docs_tables_name_declared_parameters_only():
    tables = doc_tables()
    assert set(tables) == set(NOTEBOOKS), f"docs/notebooks.md has no parameter table for {set(NOTEBOOKS) - set(tables)}"
    for name, rows in tables.items():
        unknown = sorted(set(rows) - set(NOTEBOOKS[name]))
        assert not unknown, f"docs/notebooks.md documents {unknown} for {name}.ipynb, which does not declare them"
        if name != "train":                  # train's table shows the main ones and says "every other ..."
            assert sorted(rows) == sorted(NOTEBOOKS[name]), f"docs/notebooks.md: {name}.ipynb's table is incomplete"


def test_docs_defaults_are_what_a_run_gets():
    """Each default the docs give as a literal (not "recipe (...)") is the value a run starts from."""
    for name, rows in doc_tables().items():
        for key, (_, default, _) in rows.items():
            if default.startswith("recipe"):
                continue
            literal = default.split("`")[1] if default.startswith("`") else default.split()[0]
            try:                             # Python's literals (None, True, "") as the cells write them,
                documented = ast.literal_eval(literal)
            except (ValueError, SyntaxError):  # else YAML's, as -p and params files write them (false, data)
                documented = yaml.safe_load(literal)
            assert documented == effective_default(name, key), \
                f"docs/notebooks.md gives {name}.ipynb's {key} the default {default}, a run gets " \
                f"{effective_default(name, key)!r}"


def test_docs_list_every_choice():
    """The docs' lists of data sets, backbones and heads name every entry of lt_kit's registries."""
    from lt_kit.data.datasets import DATASETS
    from lt_kit.models import HEADS, list_backbones
    rows = doc_tables()["train"]
    for key, valid in (("dataset", list(DATASETS)), ("arch", list_backbones()), ("head", list(HEADS))):
        meaning = rows[key][2]
        missing = [v for v in valid if f"`{v}`" not in meaning]
        assert not missing, f"docs/notebooks.md: the {key} row leaves out {', '.join(missing)}"
    assert "auto" in rows["bf16"][0] and "float32" in rows["bf16"][2]      # takes auto; None is float32


# --------------------------------------------------------------------------- train parameters, in-process
def test_defaults_are_the_embedded_recipe(tmp_path):
    ns = {**cell_defaults("train"), "run_dir": str(tmp_path / "run")}
    job = check_train_parameters(ns)
    assert job.params == {**resolve({}), "data_root": resolve_path("data"), "download": True}   # fetched if missing
    assert job.run_dir == tmp_path / "run"
    assert not job.overwrite and not job.resume and "digits_lt ratio 20, resnet32" in repr(job)


def test_dataset_alone_gives_the_reference_cifar10_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = check_train_parameters({**cell_defaults("train"), "dataset": "cifar10_lt"})
    p = job.params
    assert (p["arch"], p["head"], p["epochs"], p["batch_size"], p["lr"], p["weight_decay"], p["momentum"]) == \
        ("resnet32", "causal_norm", 200, 256, 0.2, 5e-4, 0.9)
    assert (p["schedule"], p["warmup_epochs"], p["milestones"], p["lr_factor"], p["mu"], p["alpha"]) == \
        ("warmup_multistep", 5, [120, 160], 0.01, 0.9, 1.0)
    assert (p["imbalance_ratio"], p["subset_seed"], p["data_root"]) == (100.0, 0, str(tmp_path / "data"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_a_preset_through_the_notebook_equals_the_cli(preset, tmp_path, monkeypatch):
    """``-f params/X.yaml``: papermill sets the preset's keys over the cell's defaults."""
    monkeypatch.chdir(ROOT)
    values = yaml.safe_load(preset.read_text()) or {}
    ns = {**cell_defaults("train"), **values, "run_dir": str(tmp_path / "run"),
          "In": ["", "# Parameters\n" + "\n".join(f"{k} = {v!r}" for k, v in values.items())]}
    want = resolve({"download": True, **load_params_file(preset)})     # the notebook fetches missing CIFAR
    want.update({k: resolve_path(want[k]) for k in PATH_PARAMS if k in want})
    assert check_train_parameters(ns).params == want


def test_selection_parameters_name_the_validation_split():
    declared = pm.inspect_notebook(str(NB / "train.ipynb"))
    assert not [p["name"] for p in declared.values() if "val/test" in p["help"]]
    assert all("validation split" in declared[k]["help"] for k in ("eval_every", "select_best"))


def test_the_default_run_dir_names_the_data_set(tmp_path, monkeypatch):
    """The demo (digits, runs/train), then ``-p dataset cifar10_lt``: the second goes to its own folder."""
    monkeypatch.chdir(tmp_path)
    demo = check_train_parameters(cell_defaults("train"))
    assert demo.run_dir == tmp_path / "runs" / "train"
    demo.run_dir.mkdir(parents=True)
    for f in ("params.yaml", "metrics.json"):                          # the demo's finished run
        (demo.run_dir / f).write_text("{}")
    job = check_train_parameters({**cell_defaults("train"), "dataset": "cifar10_lt"})
    assert job.run_dir == tmp_path / "runs" / "train_cifar10_lt"
    with pytest.raises(LtKitError, match="holds an earlier run"):
        check_train_parameters(cell_defaults("train"))
    assert check_train_parameters({**cell_defaults("train"), "run_dir": "runs/mine"}).run_dir == \
        tmp_path / "runs" / "mine"


def test_missing_cifar_is_fetched_and_without_a_network_says_where_to_put_it(tmp_path, monkeypatch):
    """``-p dataset cifar10_lt`` on a machine without the data: torchvision is asked to download it; when
    that fails (no network here: torchvision's download is replaced), one line says where the data goes."""
    import urllib.error

    import torchvision.datasets as tvd

    from lt_kit.training.fit import fit
    calls = []

    class Offline:
        def __init__(self, root, train, download):
            calls.append((root, download))
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(tvd, "CIFAR10", Offline)
    monkeypatch.chdir(tmp_path)
    job = check_train_parameters({**cell_defaults("train"), "dataset": "cifar10_lt"})
    assert job.params["download"] is True
    with pytest.raises(LtKitError) as e:
        fit(job.params, job.run_dir, progress=False)
    msg = str(e.value)
    assert calls == [(str(tmp_path / "data"), True)]
    assert "\n" not in msg and "Temporary failure in name resolution" in msg, msg
    assert f"put cifar-10-batches-py/ in {tmp_path / 'data'}" in msg and "cifar-10-python.tar.gz" in msg, msg
    assert not job.run_dir.exists()


def test_the_notebook_resumes_a_run_the_cli_started(smoke_copy):
    """The cell's download=True against the CLI's download=false: where the data comes from, not what is
    computed, so it does not block a resume."""
    job = check_train_parameters({**cell_defaults("train"), "run_dir": str(smoke_copy), "resume": True})
    assert job.resume and job.params["download"] is True and job.params["epochs"] == 3


def test_train_parameter_errors(tmp_path):
    ns = {**cell_defaults("train"), "run_dir": str(tmp_path / "run")}
    with pytest.raises(LtKitError, match=r"unknown notebook parameter 'epoch' \(did you mean 'epochs'\?\)"):
        check_train_parameters({**ns, "epoch": 3, "In": ["", "# Parameters\nepoch = 3\n"]})
    with pytest.raises(LtKitError, match="parameter 'epochs'.* must be int, got 'three'"):
        check_train_parameters({**ns, "epochs": "three"})
    with pytest.raises(LtKitError, match="'overwrite' must be bool"):
        check_train_parameters({**ns, "overwrite": "maybe"})
    with pytest.raises(LtKitError, match="dataset"):
        check_train_parameters({**ns, "dataset": "mnist"})
    with pytest.raises(LtKitError, match="either overwrite or resume"):
        check_train_parameters({**ns, "overwrite": True, "resume": True})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("{}")
    with pytest.raises(LtKitError, match="holds an earlier run; set overwrite=True"):
        check_train_parameters(ns)
    assert check_train_parameters({**ns, "overwrite": True}).overwrite
    (tmp_path / "run" / "params.yaml").write_text(yaml.safe_dump(resolve({})))
    with pytest.raises(LtKitError, match="nothing to resume"):          # checked before any training
        check_train_parameters({**ns, "resume": True})


# --------------------------------------------------------------------------- papermill runs
@pytest.fixture(scope="module")
def kernel(tmp_path_factory) -> str:
    """A kernelspec for this interpreter, first on JUPYTER_PATH: the notebooks run in this venv, whatever
    other 'python3' kernels the machine has."""
    path = tmp_path_factory.mktemp("jupyter")
    spec = path / "kernels" / "python3"
    spec.mkdir(parents=True)
    # log_level=ERROR: the kernel's "running over TCP without encryption" warning; harmless here, the kernel
    # listens on 127.0.0.1 only and every message is signed with the connection file's key
    (spec / "kernel.json").write_text(json.dumps({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                                                           "{connection_file}", "--IPKernelApp.log_level=ERROR"],
                                                  "display_name": "lt_kit test", "language": "python"}))
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", str(path))
    mp.setenv("OMP_NUM_THREADS", "2")
    yield "python3"
    mp.undo()


def execute(name: str, out: Path, kernel: str, **kw):
    return pm.execute_notebook(str(NB / f"{name}.ipynb"), str(out), kernel_name=kernel, cwd=str(ROOT),
                               progress_bar=False, **kw)


def outputs_text(nb) -> str:
    return "\n".join(o.get("text", "") + json.dumps(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def assert_no_error(nb):
    for c in nb.cells:
        for o in c.get("outputs", []):
            assert o.output_type != "error", f"{o.ename}: {o.evalue}"
    assert not any(c.metadata.get("papermill", {}).get("exception") for c in nb.cells)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, kernel):
    """train.ipynb at smoke size (-f params/smoke.yaml), executed by papermill."""
    tmp = tmp_path_factory.mktemp("nb")
    run = tmp / "run"
    params = {**yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text()), "run_dir": str(run)}
    nb = execute("train", tmp / "train.out.ipynb", kernel, parameters=params)
    return run, nb


def test_train_notebook_writes_the_run(trained):
    run, nb = trained
    assert_no_error(nb)
    assert nb.metadata.papermill.parameters["epochs"] == 3
    for f in ("params.yaml", "version.json", "checkpoint.pt", "history.json", "features.pt", "log.txt"):
        assert (run / f).is_file(), f
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_trained"] == 3 and set(metrics["tde"]) >= {"many", "medium", "few", "overall"}
    assert yaml.safe_load((run / "params.yaml").read_text())["dataset"] == "digits_lt"
    text = outputs_text(nb)
    assert "De-confound-TDE (a=1)" in text and f"{100 * metrics['tde']['overall']:.2f}" in text
    for fig in ("training_curves", "per_class_accuracy"):
        assert (run / "figures" / f"{fig}.png").read_bytes().startswith(b"\x89PNG")
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 2


def test_explorer_notebook(trained, tmp_path, kernel):
    run, _ = trained
    nb = execute("tde_explorer", tmp_path / "explorer.out.ipynb", kernel, parameters={"run_dir": str(run)})
    assert_no_error(nb)
    text = outputs_text(nb)
    assert "rule of thumb" in text and "best overall accuracy" in text and "median" in text
    assert "'median_ms'" in text                               # the measured update time is printed
    assert "De-confound-TDE (a=1)" in text and "De-confound + logit adj. (tau=1)" in text      # the methods table
    assert text.count("for reading, chosen on test") >= 3      # test-chosen rows are labelled, never results
    assert "'prior_median_ms'" in text and "logit_adjust/oracle" in text      # prior changes timed; the shift table
    for fig in ("methods", "tde_sweep", "label_shift", "reliability", "tde_panel"):
        assert (run / "figures" / f"{fig}.png").read_bytes().startswith(b"\x89PNG")
    # without a validation split: ECE as it is, no temperature; the "prior unknown" section says why it is skipped
    assert "no validation split in this run, so no temperature was fitted" in text
    assert "skipped: the run has no validation split" in text and not (run / "figures" / "adaptation.png").exists()
    # static figures are real image outputs (they render without a widget front end)
    assert sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])) == 5


@pytest.fixture
def val_run_copy(smoke_val_run, tmp_path) -> Path:
    """The session's smoke run with a validation split, copied: the notebook writes figures/ into it."""
    import shutil
    return Path(shutil.copytree(smoke_val_run, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoint.pt")))


def test_explorer_notebook_under_a_test_prior(val_run_copy, tmp_path, kernel):
    """``-p test_prior forward50``: the sweep, the summary and the static live view are drawn under that prior,
    its val choice on the re-weighted validation split; the label-shift figure is saved beside them."""
    run = val_run_copy
    nb = execute("tde_explorer", tmp_path / "explorer.out.ipynb", kernel,
                 parameters={"run_dir": str(run), "test_prior": "forward50"})
    assert_no_error(nb)
    text = outputs_text(nb)
    assert "test prior: forward50 (accuracies: the prior-weighted mean" in text                 # describe()
    assert "test prior forward50: accuracies are prior-weighted" in text                        # the sweep summary
    assert "(validation split re-weighted to forward50)" in text
    assert "tde/prior" in text and "prior-aware choices (validation split only)" in text        # the shift table
    assert "the control's last entry, estimated: EM from " in text                             # describe()
    # the prior unknown: 10 draws per protocol prior, EM / BBSE / oracle columns, the figure beside the others
    assert "10 draws per prior from the" in text and "prior error (TV)" in text and "tde/prior alpha chosen:" in text
    assert "ECE@T" in text                                                                      # calibration
    for fig in ("methods", "tde_sweep_forward50", "label_shift", "tde_panel_forward50", "adaptation", "reliability"):
        assert (run / "figures" / f"{fig}.png").read_bytes().startswith(b"\x89PNG"), fig


def test_a_bad_test_prior_stops_the_explorer_in_one_line(tmp_path, kernel):
    """Checked with the other parameters, before any run folder is read (this one does not even exist)."""
    with pytest.raises(pm.PapermillExecutionError) as e:
        execute("tde_explorer", tmp_path / "out.ipynb", kernel,
                parameters={"run_dir": str(tmp_path / "run"), "test_prior": "forwad50"})
    assert e.value.ename == "LtKitError" and "\n" not in e.value.evalue
    assert e.value.evalue == ("notebook parameter 'test_prior' must be one of backward50, backward25, backward10, "
                              "backward5, backward2, uniform, forward2, forward5, forward10, forward25, forward50, "
                              "estimated, got 'forwad50'")
    assert "check_parameters(globals(), EXPLORER_PARAMS)" in e.value.source     # the cell after the parameters
    assert not (tmp_path / "run").exists()


def test_direction_notebook(trained, tmp_path, kernel):
    run, _ = trained
    nb = execute("momentum_direction", tmp_path / "direction.out.ipynb", kernel,
                 parameters={"run_dir": str(run), "alpha": 2.0})
    assert_no_error(nb)
    assert "alpha 2" in outputs_text(nb)
    for fig in ("direction_alignment", "direction_cos_by_split", "direction_projection", "direction_logit_shift"):
        assert (run / "figures" / f"{fig}.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("params, message", [
    ({"epoch": 3}, r"LtKitError.*unknown notebook parameter 'epoch' \(did you mean 'epochs'\?\)"),
    ({"batch_size": "big"}, r"LtKitError.*parameter 'batch_size'.*must be int, got 'big'"),
], ids=["unknown", "ill-typed"])
def test_bad_parameter_stops_the_notebook(params, message, tmp_path, kernel):
    with pytest.raises(pm.PapermillExecutionError, match=message):
        execute("train", tmp_path / "out.ipynb", kernel, parameters={**params, "run_dir": str(tmp_path / "run")})
    assert not (tmp_path / "run").exists()                    # nothing was trained or written
