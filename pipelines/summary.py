"""The short report printed at the end of a run."""

from __future__ import annotations

from components.core.credentials import masked
from components.core.tracking import CHAMPION_VERSION_TAG
from pipelines.local import RunOutcome
from pipelines.steps import STEPS as STEP_ORDER


def format_summary(outcome: RunOutcome, model_name: str, tracking_uri: str) -> str:
    m, t = outcome.metrics, outcome.tags
    lines = ["", "=" * 64, f"fmpipe run {outcome.ctx.pipeline_run_id[:8]}: "
             + ("SUCCEEDED" if outcome.succeeded else "FAILED")]
    if outcome.error:
        lines.append(f"  stopped: {outcome.error}")
    if "rows_read" in m:
        dropped = {k[8:]: int(v) for k, v in m.items() if k.startswith("dropped_") and v}
        lines.append(f"  data: {int(m['rows_read'])} rows read, {int(m['rows_clean'])} kept"
                     + (f", dropped {dropped}" if dropped else "")
                     + (f", {int(m['lines_with_invalid_utf8'])} lines with invalid UTF-8 repaired"
                        if m.get("lines_with_invalid_utf8") else ""))
    if "validation_warnings" in m:
        drift = ", ".join(f"{k[6:]} {v:.3g}" for k, v in sorted(m.items()) if k.startswith("drift_"))
        lines.append(f"  validation: {int(m['validation_warnings'])} warning(s)"
                     + (f"; drift vs production: {drift}" if drift else "; no production model to compare"))
    if "test_macro_f1" in m:
        lines.append("  test split                macro-F1   accuracy")
        lines.append(f"    model                   {m['test_macro_f1']:.4f}     {m['test_accuracy']:.4f}")
        if "champion_macro_f1" in m:
            champion = f"champion (v{t.get(CHAMPION_VERSION_TAG, '?')})"
            lines.append(f"    {champion:<24}{m['champion_macro_f1']:.4f}")
        # The task's baselines (text: TF-IDF; images: logistic regression on pixels), best first.
        baselines = sorted((k for k in m if k.startswith("baseline_") and k.endswith("_macro_f1")),
                           key=lambda k: -m[k])
        for key in baselines:
            name = key.removeprefix("baseline_").removesuffix("_macro_f1")
            lines.append(f"    {'baseline ' + name:<24}{m[key]:.4f}")
        ece = f" (calibration error {m['test_ece']:.3f})" if "test_ece" in m else ""
        lines.append(f"  blessed: {t.get('fmpipe.blessed', 'n/a')}{ece}")
    ranking = sorted(k for k in m if k.startswith("test_ndcg_at_"))
    if ranking:  # a recommender: ranking and rating figures against its baselines
        k = ranking[0].rsplit("_", 1)[-1]
        names = [f"ndcg_at_{k}", f"recall_at_{k}", "coverage", "rmse"]
        lines.append(f"  test split                NDCG@{k}    recall@{k}  coverage  RMSE")
        rows = [("model", "test_")]
        suffix = f"_ndcg_at_{k}"
        rows += [(f"baseline {key[9:-len(suffix)]}", key[:-len(suffix)] + "_") for key in sorted(m)
                 if key.startswith("baseline_") and key.endswith(suffix)]
        rows += [(f"baseline {n}", f"baseline_{n}_") for n in ("item_mean", "global_mean")
                 if f"baseline_{n}_rmse" in m]
        for label, prefix in rows:
            cells = [f"{m[prefix + n]:.4f}" if prefix + n in m else "   -  " for n in names]
            lines.append(f"    {label:<22}  " + "    ".join(cells))
        if f"champion_ndcg_at_{k}" in m:
            champion = f"champion (v{t.get(CHAMPION_VERSION_TAG, '?')})"
            lines.append(f"    {champion:<22}  {m[f'champion_ndcg_at_{k}']:.4f}")
        lines.append(f"  blessed: {t.get('fmpipe.blessed', 'n/a')}")
    if "parity_max_abs_score_diff" in m:
        lines.append(f"  ONNX parity: max |score diff| {m['parity_max_abs_score_diff']:.2e}, same top k "
                     f"for {m['parity_top_k_agreement']:.1%} of test users, "
                     f"passed: {bool(m.get('parity_passed'))}")
    if "parity_max_abs_logit_diff" in m:
        lines.append(f"  ONNX parity: max |logit diff| {m['parity_max_abs_logit_diff']:.2e}, "
                     f"argmax agreement {m['parity_argmax_agreement']:.4f}, "
                     f"passed: {bool(m.get('parity_passed'))}")
        variant = t.get("fmpipe.onnx_variant")
        if variant:
            b1 = m.get(f"latency_b1_ms_onnx_{variant}")
            torch_b1 = m.get("latency_b1_ms_torch_fp32")
            b32 = m.get(f"throughput_b32_seq_s_onnx_{variant}")
            torch_b32 = m.get("throughput_b32_seq_s_torch_bf16")
            speed = f", batch-1 latency {b1:.1f} ms vs PyTorch {torch_b1:.1f} ms" if b1 and torch_b1 else ""
            if b32 and torch_b32:
                unit = {"image": "images/s", "audio": "clips/s"}.get(t.get("fmpipe.task"), "seq/s")
                speed += f", batch-32 {b32:.0f} {unit} vs PyTorch bf16 {torch_b32:.0f}"
            loss = (f", macro-F1 loss {m[f'{variant}_macro_f1_loss']:+.4f}"
                    if f"{variant}_macro_f1_loss" in m else "")
            lines.append(f"  shipped ONNX variant: {variant}{loss}{speed}")
    version = t.get("fmpipe.model_version")
    if version:
        aliases = [k.split(".")[-1] for k, v in t.items() if k.startswith("fmpipe.alias.") and v == version]
        lines.append(f"  registered: {model_name} version {version}"
                     + (f", alias: {', '.join(aliases)}" if aliases else " (no alias moved)"))
        card = model_card_path(outcome)
        lines.append(f"  model card: {card}" if card else f"  model card: fmpipe card {model_name}/{version}")
    else:
        lines.append("  registered: nothing (no new model version, no alias moved)")
    times = [(s, m[f"time_{s}_s"]) for s in STEP_ORDER if f"time_{s}_s" in m]
    if times:
        lines.append("  step times: " + ", ".join(f"{s} {sec:.0f}s" for s, sec in times))
    if outcome.outputs_dir:
        lines.append(f"  artifacts: {outcome.outputs_dir}")
    if outcome.log_file:
        lines.append(f"  full log: {outcome.log_file}")
    lines.append(f"  MLflow UI: .venv/bin/mlflow ui --backend-store-uri {masked(tracking_uri)}")
    lines.append("=" * 64)
    return "\n".join(lines)


def model_card_path(outcome: RunOutcome) -> str | None:
    """The card the promote step wrote under the run's outputs (its KFP HTML output), if any."""
    if outcome.outputs_dir is None:
        return None
    found = sorted(outcome.outputs_dir.rglob("promote/model_card"))
    return str(found[0]) if found else None


def summary_json(outcome: RunOutcome, model_name: str) -> str:
    """The run's outcome as one JSON line, for CI (`fmpipe run --json`)."""
    import json

    t = outcome.tags
    version = t.get("fmpipe.model_version")
    return json.dumps({
        "pipeline_run_id": outcome.ctx.pipeline_run_id, "succeeded": outcome.succeeded,
        "error": outcome.error, "model": model_name, "version": version,
        "aliases": sorted(k.split(".")[-1] for k, v in t.items()
                          if k.startswith("fmpipe.alias.") and v == version),
        "blessed": t.get("fmpipe.blessed") == "true", "shipped_variant": t.get("fmpipe.onnx_variant"),
        "metrics": {k: v for k, v in sorted(outcome.metrics.items())},
        "model_card": model_card_path(outcome) if version else None,
        "outputs": str(outcome.outputs_dir) if outcome.outputs_dir else None})


NOT_REGISTERED = 3  # the exit status of --require-registered when a run registers nothing


def exit_status(outcome: RunOutcome, require_registered: bool = False) -> tuple[int, str | None]:
    """(exit status, error line) of a run. A failed step is 1; so is an export that failed its
    parity or smoke check (a defect, not a verdict on the model). A model evaluate did not bless is
    a normal outcome of a scheduled retraining (0), unless the caller requires a new version (3)."""
    m, t = outcome.metrics, outcome.tags
    if not outcome.succeeded:
        return 1, outcome.error or "the run failed"
    if t.get("fmpipe.model_version"):
        return 0, None
    if m.get("parity_passed") == 0.0:
        smoke = "failed" if m.get("smoke_passed") == 0.0 else "passed"
        return 1, (f"export_onnx: the exported model failed its checks (max |logit diff| "
                   f"{m.get('parity_max_abs_logit_diff', float('nan')):.2e}, smoke check {smoke}); "
                   "nothing registered")
    if require_registered:
        return NOT_REGISTERED, ("evaluate did not bless the model, so nothing was registered "
                                "(--require-registered)")
    return 0, None
