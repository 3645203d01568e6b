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
