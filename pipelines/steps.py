"""The pipeline's steps in DAG order (kept apart from dag.py so the CLI need not import kfp).

dvc.yaml lists the same stages in the same order; a test checks that with the compiled DAG.
"""

STEPS = ("ingest", "validate_data", "pretrain", "finetune", "evaluate", "export_onnx", "register",
         "promote")
