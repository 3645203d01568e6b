import subprocess
import sys


def test_only_the_validating_step_pays_for_great_expectations():
    code = (
        "import sys, pipelines.cli, pipelines.dag, components.ingest.step, components.finetune.step, "
        "components.evaluate.step, components.export_onnx.step, components.registry.step\n"
        "print('great_expectations' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_step_imports_another_step():
    """Steps share code through components/core, tasks, training, serving and card (the model card,
    which promote writes), never through each other."""
    import ast
    from pathlib import Path

    from pipelines.steps import STEPS

    components = Path(__file__).resolve().parents[2] / "components"
    folders = {step: "registry" if step in ("register", "promote") else step for step in STEPS}
    for folder in set(folders.values()):
        for source in (components / folder).glob("*.py"):
            for node in ast.walk(ast.parse(source.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                for name in names:
                    parts = name.split(".")
                    if parts[0] == "components" and len(parts) > 1:
                        assert parts[1] in (folder, "core", "tasks", "training", "serving", "card"), \
                            f"{source.relative_to(components)} imports {name}"
