"""Parsing the Snakefile loads no numerical or deep-learning library (an HPC login node runs it)."""

import subprocess
import sys
import textwrap

from conftest import ROOT

# What the parse must not import: the jobs' libraries, slow to import and absent where only
# Snakemake is installed.
HEAVY = ("numpy", "pandas", "sklearn", "scipy", "torch", "torchvision", "torchmetrics", "lightning", "timm", "PIL")
HEAVY += ("matplotlib", "kornia", "onnx", "onnxruntime", "mlflow")

PARSE = textwrap.dedent(
    """
    import ast
    import sys

    HEAVY = set(sys.argv[3].split(","))


    class Blocked:
        \"\"\"Refuse every heavy module, as an environment without them would.\"\"\"

        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in HEAVY:
                raise ModuleNotFoundError(f"{name} is blocked for this test", name=name)
            return None


    sys.meta_path.insert(0, Blocked())
    sys.path.insert(0, sys.argv[2])

    # The module-level imports of rules/common.smk, as the Snakefile's parse runs them.
    tree = ast.parse(open(sys.argv[1]).read())
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert any(isinstance(node, ast.ImportFrom) and node.module.startswith("skinlesion") for node in imports)
    names = {}
    exec(compile(ast.Module(body=imports, type_ignores=[]), sys.argv[1], "exec"), names)

    # The calls the parse makes with them.
    from skinlesion.config import load_config

    config = names["typed_config"](load_config())
    names["check_config"](config)
    names["data_files"](config)
    for tier in config["train"]["tiers"]:
        settings = names["tier_settings"](config["train"], tier)
        for variant in [names["DEFAULT"], *config["selection"]["variants"].get(tier, {})]:
            names["variant_settings"](config["train"], tier, variant, config["selection"]["variants"])
        if "backbone" in settings["model"]:
            names["package_folder"]("results", settings["model"]["backbone"])
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in HEAVY)
    assert not loaded, loaded
    print("parsed without", len(HEAVY), "heavy modules")
    """
)


def test_snakefile_parse_imports_no_heavy_library():
    result = subprocess.run(
        [sys.executable, "-c", PARSE, str(ROOT / "rules" / "common.smk"), str(ROOT / "src"), ",".join(HEAVY)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "parsed without" in result.stdout
