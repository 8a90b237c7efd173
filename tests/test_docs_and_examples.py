"""Every code block in the docs runs as written; the README's example writes its PNG."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    "README.md",
    "docs/quickstart.md",
    "docs/concepts.md",
    "docs/sampling.md",
    "docs/training.md",
    "docs/evaluation.md",
    "docs/dpm2015.md",
]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("page", DOCS)
def test_doc_code_blocks_run_in_order(page):
    blocks = python_blocks(ROOT / page)
    assert blocks, f"{page} has no python code blocks"
    namespace: dict = {"__name__": f"docs_{Path(page).stem}"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{page}[block {i}]", "exec"), namespace)
        except Exception as err:  # pragma: no cover - the message is the point
            raise AssertionError(f"{page}, code block {i} failed:\n{block}") from err


def test_gmm_example_writes_its_comparison_png(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gmm_2d", ROOT / "examples" / "gmm_2d.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "grid.png"
    module.main(["--out", str(out), "--n", "300", "--steps", "40", "--sde", "ve"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert printed.count("ETA") == 6 and "wrote" in printed


def test_gmm_example_rejects_bad_flags():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gmm_2d", ROOT / "examples" / "gmm_2d.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for bad in (["--steps", "2"], ["--sde", "vp,xx"]):
        with pytest.raises(SystemExit):
            module.main(bad)
