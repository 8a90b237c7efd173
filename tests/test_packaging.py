"""The installed package runs the docs' commands outside a checkout: the configs ship in the
wheel, `--config` takes a shipped config by name, and the `sde-gen` console script is the
entry point `launch.py` wraps."""

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from sde_gen.experiments import config as cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = sorted(
    f[:-3]
    for f in os.listdir(os.path.join(ROOT, "configs"))
    if f.endswith(".py") and "\ndef get_config(" in open(os.path.join(ROOT, "configs", f)).read()
)


def run_cli(args, cwd, pythonpath):
    """`python -m sde_gen ARGS` in `cwd` with only `pythonpath` added to the path."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": pythonpath}
    return subprocess.run(
        [sys.executable, "-m", "sde_gen", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


@pytest.mark.parametrize("name", ["vp_digits", "vp_digits.py", "configs/vp_digits.py"])
def test_a_bare_name_or_the_docs_path_resolves_to_the_shipped_config(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    assert os.path.samefile(cfg.config_file(name), os.path.join(ROOT, "configs", "vp_digits.py"))
    assert cfg.load_file(name).data.dataset == "digits"


def test_an_existing_path_is_used_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkdir("configs")
    text = open(os.path.join(ROOT, "configs", "toy_2d.py")).read()
    open("configs/vp_digits.py", "w").write(text)  # a user's own file of a shipped name
    assert cfg.config_file("configs/vp_digits.py") == "configs/vp_digits.py"
    assert cfg.load_file("configs/vp_digits.py").model.name == "mlp"


def test_the_shipped_configs_are_the_files_that_define_get_config():
    assert list(cfg.shipped_configs()) == SHIPPED
    assert "vp_digits" in SHIPPED and "default_cifar" not in SHIPPED


@pytest.mark.parametrize(
    "name, message",
    [
        ("vp_digts", "unknown config 'vp_digts'; did you mean vp_digits? shipped configs: "),
        ("configs/vp_digts.py", "config file 'configs/vp_digts.py' does not exist; did you mean"),
        ("runs/x/config.json", "config file 'runs/x/config.json' does not exist; shipped"),
    ],
)
def test_an_unknown_config_is_one_line_listing_the_shipped_configs(name, message, tmp_path):
    with pytest.raises(cfg.ConfigError) as error:
        cfg.config_file(str(tmp_path / name) if name.startswith("runs") else name)
    text = str(error.value).replace(str(tmp_path) + os.sep, "")
    assert message in text and "\n" not in text
    assert text.endswith("shipped configs: " + ", ".join(SHIPPED))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config=vp_digits", "--config.training.n_itrs=3"],
         "did you mean config.training.n_iters?"),
        (["--config=vp_digts"], "unknown config 'vp_digts'; did you mean vp_digits?"),
    ],
)  # fmt: skip
def test_python_m_sde_gen_takes_a_shipped_config_by_name_outside_the_checkout(
    args, message, tmp_path
):
    proc = run_cli([*args, f"--workdir={tmp_path / 'run'}"], cwd=tmp_path, pythonpath=ROOT)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]  # the last line says it all
    assert not (tmp_path / "run").exists()  # refused before any work


def _build_wheel(out: str, tmp: str) -> str:
    """The wheel of a copy of the package sources (the checkout stays clean); offline with
    the installed setuptools when it can build wheels, else through pip's build isolation."""
    src = os.path.join(tmp, "src")
    os.mkdir(src)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src)
    for name in ("sde_gen", "configs"):
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(os.path.join(ROOT, name), os.path.join(src, name), ignore=ignore)
    offline = importlib.util.find_spec("setuptools") and importlib.util.find_spec("wheel")
    command = [sys.executable, "-m", "pip", "wheel", src, "--no-deps", "-q", "-w", out]
    proc = subprocess.run(
        command + (["--no-build-isolation"] if offline else []), capture_output=True, text=True
    )
    if proc.returncode and not offline and "No matching distribution" in proc.stderr:
        pytest.skip("no build backend: setuptools cannot be installed offline")
    assert proc.returncode == 0, proc.stderr
    (wheel,) = [f for f in os.listdir(out) if f.endswith(".whl")]
    return os.path.join(out, wheel)


@pytest.mark.slow  # builds a wheel (pip's isolated build fetches setuptools)
def test_the_wheel_ships_the_configs_and_the_console_script(tmp_path):
    wheel = _build_wheel(str(tmp_path / "dist"), str(tmp_path))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "sde-gen = sde_gen.launch:main" in z.read(entry_points).decode()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        assert "Provides-Extra: torch" in z.read(metadata).decode()
        z.extractall(tmp_path / "site")
    configs = {f for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py")}
    assert {f"configs/{f}" for f in configs} <= names
    assert {"sde_gen/launch.py", "sde_gen/__main__.py"} <= names

    # Installed elsewhere, run from a directory with no configs/: the wheel's own files load
    # (their `configs.<name>` imports included) and the console script is its entry point.
    site, work = str(tmp_path / "site"), tmp_path / "elsewhere"
    work.mkdir()
    check = (
        "import importlib.metadata as m, sde_gen, sde_gen.launch as launch;"
        "from sde_gen.experiments import config as cfg;"
        "(ep,) = m.entry_points(group='console_scripts', name='sde-gen');"
        "assert ep.load() is launch.main;"
        "print(sde_gen.__file__); print(cfg.config_file('vp_digits'))"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": site}
    proc = subprocess.run(
        [sys.executable, "-c", check], cwd=work, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    package, config = proc.stdout.split()
    assert package.startswith(site) and config == os.path.join(site, "configs", "vp_digits.py")
    args = ["--config=configs/vp_digits.py", "--config.training.n_itrs=3", "--workdir=run"]
    proc = run_cli(args, cwd=work, pythonpath=site)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "did you mean config.training.n_iters?" in proc.stderr
    assert not (work / "run").exists()
