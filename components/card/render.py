"""A model card as one self-contained HTML page: inline CSS, images as data: URIs, no script from
elsewhere, no network. Figures carry `data-metric` attributes, so a test (or a person's tooling)
can read them back from the page."""

from __future__ import annotations

import base64
import html
import io
import re
from typing import Any

from components.card.gather import STEPS, CardData

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;
  background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d6dae1;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}
.sub{color:#5b6475}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-size:12px;margin-right:6px}
.ok{background:#dff3e4;color:#14632b} .bad{background:#fde2e1;color:#8a1c13}
.info{background:#e3ebfb;color:#1e3f8a}
table{border-collapse:collapse;margin:6px 0 10px;background:#fff}
td,th{border:1px solid #dde1e7;padding:4px 8px;text-align:left}
th{background:#eef1f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.regressed td{background:#fff1f0} .grid{display:flex;flex-wrap:wrap;gap:16px} .grid figure{margin:0}
img{max-width:520px;border:1px solid #dde1e7;background:#fff} figcaption{font-size:12px;color:#5b6475}
.missing{color:#8a5a00;background:#fff6e0;padding:6px 10px;border-radius:4px}
.tok{padding:1px 2px;border-radius:3px} .ex{background:#fff;border:1px solid #dde1e7;padding:8px;margin:6px 0}
"""


class Raw(str):
    """Markup built here from escaped parts: `table` puts it in as it is. Every other cell (any
    string from the registry, the data or a person) is escaped."""


BASE64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")


def esc(value: Any) -> str:
    return html.escape(str(value))


def num(value: Any, digits: int = 4) -> str:
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return "–"


def table(headers: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        cells = "".join(cell if isinstance(cell, Raw) else f"<td>{esc(cell)}</td>" for cell in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def metric_cell(name: str, value: Any, digits: int = 4) -> str:
    return Raw(f'<td class="num" data-metric="{esc(name)}">{num(value, digits)}</td>')


def ncell(value: Any, digits: int | None = 4) -> Raw:
    """A right-aligned cell: the value as a number with `digits` decimals (None: as it is, escaped)."""
    return Raw(f'<td class="num">{num(value, digits) if digits is not None else esc(value)}</td>')


def image(b64: str, caption: str) -> str:
    if not BASE64.match(b64):  # a record that is not plain base64 never reaches the attribute
        return missing(f"{caption}: the recorded image is not base64")
    return (
        f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{b64}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def missing(text: str) -> str:
    return f'<p class="missing">{esc(text)}</p>'


def render(card: CardData) -> str:
    """The card's HTML page."""
    sections = [
        _header(card),
        _lineage(card),
        _training(card),
        _evaluation(card),
        _explanations(card),
        _export(card),
        _registry(card),
    ]
    notes = "".join(f"<li>{esc(m)}</li>" for m in card.missing)
    foot = f"<h2>Not recorded</h2><ul>{notes}</ul>" if notes else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{esc(card.model)} v{esc(card.version)} — model card</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(sections)}{foot}<p class=sub>Written by fmpipe from the MLflow registry "
        "and the runs of this version's pipeline run.</p></main></body></html>"
    )


def _header(card: CardData) -> str:
    blessed = card.tags.get("fmpipe.blessed") == "true"
    parity = card.tags.get("fmpipe.parity_passed") == "true"
    badges = (
        f'<span class="badge {"ok" if blessed else "bad"}">{"blessed" if blessed else "not blessed"}</span>'
        f'<span class="badge {"ok" if parity else "bad"}">'
        f"{'parity passed' if parity else 'parity failed'}</span>"
        + "".join(f'<span class="badge info">{esc(a)}</span>' for a in card.aliases)
    )
    metrics = [
        (k.removeprefix("metric."), v) for k, v in sorted(card.tags.items()) if k.startswith("metric.")
    ]
    row = "".join(metric_cell(k, v) for k, v in metrics)
    head = "".join(f"<th>{esc(k)}</th>" for k, _ in metrics)
    figures = (
        f"<table><tr>{head}</tr><tr>{row}</tr></table>" if metrics else missing("no headline metrics tagged")
    )
    desc = "".join(f"<p>{esc(line)}</p>" for line in card.description.splitlines())
    return (
        f'<h1 data-model="{esc(card.model)}" data-version="{esc(card.version)}">{esc(card.model)} '
        f"version {esc(card.version)}</h1><p class=sub>{esc(_kind(card.task))} · registered "
        f"{esc(card.created)}</p><p>{badges}</p>{figures}{desc}"
    )


def _lineage(card: CardData) -> str:
    t = card.tags
    rows = [
        ["data set", t.get("fmpipe.data_source", "–")],
        ["data md5 (DVC)", t.get("fmpipe.data_md5", "–")],
        ["data version (.dvc commit)", t.get("fmpipe.data_dvc_commit", "–")],
        ["data revision", t.get("fmpipe.data_rev", "–")],
        ["code commit", t.get("fmpipe.git_commit", "–")],
        ["base model", t.get("fmpipe.base_model", "–")],
        ["params digest", t.get("fmpipe.params_digest", "–")],
        ["pipeline run", t.get("fmpipe.pipeline_run_id", "–")],
        ["run by", card.pipeline.get("user", "–")],
        ["started", card.pipeline.get("started", "–")],
    ]
    out = "<h2>Lineage</h2>" + table(["", ""], rows)
    ingest = card.records.get("ingest_report.json")
    if ingest:
        read, clean = ingest.get("read", {}), ingest.get("clean", {})
        dropped = clean.get("dropped", {})
        rows = [
            ["rows read", read.get("rows_read", "–")],
            ["rows kept", clean.get("rows_out", "–")],
            *[[f"dropped: {reason.replace('_', ' ')}", n] for reason, n in dropped.items()],
        ]
        out += "<h3>Rows</h3>" + table(["", "rows"], rows)
    else:
        out += missing("no ingest report recorded")
    drift = {
        k.removeprefix("drift_"): v
        for k, v in card.steps.get("validate_data", {}).get("metrics", {}).items()
        if k.startswith("drift_")
    }
    if drift:
        out += "<h3>Drift against production's data</h3>" + table(
            ["figure", "value"], [[k, ncell(v)] for k, v in sorted(drift.items())]
        )
    elif "validate_data" in card.steps:
        out += "<p class=sub>Drift: no production version to compare with when this one was validated.</p>"
    validation = card.records.get("validation/result.json")
    if validation:
        checks = validation.get("checks", [])
        failed = [c for c in checks if not c.get("success")]
        verdict = "passed" if validation.get("success") else "FAILED"
        out += f"<h3>Validation: {verdict}, {len(checks)} checks, {len(failed)} not passed</h3>" + table(
            ["split / table", "rule", "column", "severity", "result"],
            [
                [
                    c.get("table"),
                    c.get("rule"),
                    c.get("column") or "",
                    c.get("severity"),
                    "ok" if c.get("success") else c.get("detail", "failed"),
                ]
                for c in checks
                if not c.get("success") or c.get("table") in ("drift", "leakage")
            ]
            or [["all", "every rule passed", "", "", "ok"]],
        )
    else:
        out += missing("no validation result recorded")
    return out


def _training(card: CardData) -> str:
    out = "<h2>Training</h2>"
    if card.curves:
        curves = image(_curves_png(card.curves), "finetune: loss, learning rate, validation")
        out += f'<div class="grid">{curves}</div>'
    else:
        out += missing("no training curves recorded")
    steps = [
        [name, ncell(card.steps[name].get("seconds"), 1)]
        for name in STEPS
        if name in card.steps
    ]
    finetune = card.steps.get("finetune", {}).get("metrics", {})
    if "samples_per_second" in finetune:
        steps.append(
            [
                "finetune throughput (samples/s)",
                ncell(finetune["samples_per_second"], 1),
            ]
        )
    return out + (table(["step", "seconds"], steps) if steps else "")


def _curves_png(curves: dict[str, list[tuple[int, float]]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.1))
    validation = tuple(name for name in curves if name.startswith("val_")) or ("val_macro_f1", "val_accuracy")
    panels = (("train_loss",), ("learning_rate",), validation)
    for ax, names in zip(axes, panels, strict=True):
        for name in names:
            if name in curves:
                steps, values = zip(*curves[name], strict=True)
                ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=name)
        ax.set_xlabel("step")
        ax.set_title(" / ".join(names), fontsize=10)
        ax.grid(alpha=0.3)
        if len(names) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _kind(task: str) -> str:
    return "recommender" if task == "recsys" else f"{task} classifier"


def _label(metric: str) -> str:
    """macro_f1 -> macro-F1, ndcg_at_10 -> NDCG@10, rmse -> RMSE."""
    if metric == "macro_f1":
        return "macro-F1"
    name, _, k = metric.partition("_at_")
    name = name.upper() if name in ("ndcg", "map", "rmse", "mae") else name
    return f"{name}@{k}" if k else name


def _evaluation(card: CardData) -> str:
    ev = card.records.get("evaluation/evaluation.json")
    if not ev:
        return "<h2>Evaluation</h2>" + missing("no evaluation record")
    model = ev.get("model", {})
    # The columns: a classifier's macro-F1 and accuracy; a recommender's headline figures.
    columns = (["macro_f1", "accuracy"] if "macro_f1" in model
               else [c for c in ev.get("headline", []) if c in model] or ["macro_f1", "accuracy"])
    rows = [["this version", *(metric_cell(c, model.get(c)) for c in columns)]]
    for name, base in (ev.get("baselines") or {}).items():
        rows.append([f"baseline: {name}", *(ncell(base.get(c)) for c in columns)])
    champion = ev.get("champion") or {}
    if "metrics" in champion:
        rows.append([f"champion: version {champion.get('version')}",
                     *(ncell(champion["metrics"].get(c)) for c in columns)])
    out = "<h2>Evaluation</h2><h3>Against the baselines and the champion (test split)</h3>"
    out += table(["model", *(_label(c) for c in columns)], rows)
    blessing = ev.get("blessing", {})
    out += f"<h3>Blessing: {'blessed' if blessing.get('blessed') else 'NOT blessed'}</h3>"
    out += table(
        ["check", "value", "threshold", "passed", "note"],
        [
            [
                c.get("name"),
                ncell(c.get("value")),
                ncell(c.get("threshold")),
                "yes" if c.get("passed") else "NO",
                c.get("note", ""),
            ]
            for c in blessing.get("checks", [])
        ],
        ["" if c.get("passed") else "regressed" for c in blessing.get("checks", [])],
    )
    per_class = model.get("per_class") or {}
    if per_class:
        out += "<h3>Per class</h3>" + table(
            ["class", "precision", "recall", "F1", "support"],
            [
                [
                    name,
                    *(
                        ncell(m.get(k), 3 if k != "support" else 0)
                        for k in ("precision", "recall", "f1-score", "support")
                    ),
                ]
                for name, m in per_class.items()
                if isinstance(m, dict)
            ],
        )
    slices = ev.get("slices") or {}
    if slices:
        champ_slices = champion.get("slices") or {}
        # A classifier's slices carry macro-F1; a recommender's recall@k.
        key = "macro_f1" if any("macro_f1" in v for v in slices.values()) else next(
            (k for v in slices.values() for k in v if k.startswith("recall_at_")), "macro_f1")
        rows, classes = [], []
        for name, s in slices.items():
            theirs = (champ_slices.get(name) or {}).get(key)
            worse = theirs is not None and s.get(key) is not None and s[key] < theirs
            rows.append(
                [
                    name,
                    ncell(s.get("rows", "–"), None),
                    ncell(s.get(key)),
                    ncell(theirs),
                    "regressed" if worse else "",
                ]
            )
            classes.append("regressed" if worse else "")
        out += "<h3>Slices (regressions against the champion marked)</h3>" + table(
            ["slice", "rows", _label(key), f"champion {_label(key)}", ""], rows, classes
        )
    figures = [
        (p, c)
        for p, c in (
            ("evaluation/confusion_matrix.png", "confusion matrix"),
            (
                "evaluation/reliability.png",
                f"reliability (ECE {num((ev.get('calibration') or {}).get('ece'), 3)})",
            ),
            ("evaluation/slices.png", "slices"),
            ("evaluation/ranking.png", "ranking figures against the baselines, and recall by slice"),
            ("evaluation/misclassified.png", "misclassified test images"),
        )
        if p in card.images
    ]
    if figures:
        out += '<div class="grid">' + "".join(image(card.images[p], c) for p, c in figures) + "</div>"
    return out


def _explanations(card: CardData) -> str:
    record = card.records.get("evaluation/explanations.json")
    out = "<h2>Explanations</h2>"
    if not record and card.task == "recsys":
        return out + missing("a recommender records no explanations (its evaluation has the slices instead)")
    if not record:
        return out + missing("no explanations recorded for this version (its pipeline run predates them)")
    out += f"<p class=sub>{esc(record.get('method', ''))}</p>"
    for ex in record.get("examples", []):
        verdict = "correct" if ex.get("label") == ex.get("predicted") else "error"
        head = (
            f"<b>{esc(verdict)}</b>: true {esc(ex.get('label'))}, predicted {esc(ex.get('predicted'))} "
            f"({num(ex.get('probability'), 2)})"
        )
        if "tokens" in ex:
            peak = max((abs(a) for a in ex["attributions"]), default=1.0) or 1.0
            body = "".join(
                _token(tok, a / peak) for tok, a in zip(ex["tokens"], ex["attributions"], strict=True)
            )
        elif "overlay_png" in ex:
            body = image(ex["overlay_png"], "saliency (red: pushes towards the prediction)")
        else:
            body = ""
        out += f'<div class="ex">{head}<div>{body}</div></div>'
    return out


def _token(token: str, weight: float) -> str:
    # red: towards the predicted class; blue: against it. A word piece (##ing) joins its word.
    color = f"rgba(220,50,47,{abs(weight):.2f})" if weight > 0 else f"rgba(38,139,210,{abs(weight):.2f})"
    space = "" if token.startswith("##") else " "
    word = esc(token.removeprefix("##"))
    return f'{space}<span class="tok" style="background:{color}" title="{weight:+.2f}">{word}</span>'


def _export(card: CardData) -> str:
    checks = card.records.get("export_checks.json")
    if not checks:
        return "<h2>Export</h2>" + missing("no export record")
    parity = checks.get("parity") or {}
    shown = checks.get("runtime") not in (None, checks.get("shipped"))
    runtime = f" on {esc(checks['runtime'])}" if shown else ""
    out = (
        f"<h2>Export</h2><p>Shipped: <b>{esc(checks.get('shipped'))}</b>{runtime}. "
        f"Parity {'passed' if parity.get('passed') else 'FAILED'}: max |logit diff| "
        f"{num(parity.get('max_abs_logit_diff'), 5)}, argmax agreement "
        f"{num(parity.get('argmax_agreement'))}; "
        f"serving smoke check {'passed' if (checks.get('smoke') or {}).get('passed') else 'FAILED'}.</p>"
    )
    timings = checks.get("timings") or {}
    macro, loss = checks.get("macro_f1") or {}, checks.get("f1_loss") or {}
    agreement = checks.get("agreement") or {}
    rows, classes = [], []
    for name, t in timings.items():
        # export measured quality per ONNX variant and for torch fp32 (`torch`), not for torch bf16
        key = name.removeprefix("onnx_") if name.startswith("onnx_") else "torch" * (name == "torch_fp32")
        rows.append(
            [
                name + (" (shipped)" if key == checks.get("shipped") else ""),
                ncell(t.get("b1_ms"), 2),
                ncell(t.get("b32_seq_per_s"), 1),
                ncell(macro.get(key)),
                ncell(loss.get(key)),
                ncell(agreement.get(key)),
            ]
        )
        classes.append("")
    if rows:
        out += table(
            [
                "variant",
                "batch 1 (ms)",
                "batch 32 (inputs/s)",
                "test macro-F1",
                "F1 loss vs torch",
                "argmax agreement",
            ],
            rows,
            classes,
        )
    gate = card.steps.get("export_onnx", {}).get("params", {}).get("max_quantized_f1_loss")
    why = (
        "Why: the first variant of export_onnx.ship_preference that was built on this machine and "
        "passed its gate ships; a reduced-precision variant (int8, openvino_bf16) must lose at most "
        f"{gate or 'export_onnx.max_quantized_f1_loss'} macro-F1 against torch"
    )
    if checks.get("champion_floor") is not None:
        why += f" and keep the champion rule (macro-F1 >= {num(checks['champion_floor'])})"
    return out + f"<p class=sub>{esc(why)}.</p>"


def _registry(card: CardData) -> str:
    out = "<h2>Registry</h2>"
    out += table(
        ["alias", "version"], [[a, v] for a, v in sorted(card.all_aliases.items())] or [["none", ""]]
    )
    moves = [e for e in card.history if e.get("state") == "done"]
    if moves:
        out += "<h3>Promotion history of the model</h3>" + table(
            ["#", "when", "alias", "version", "from", "action", "by", "why"],
            [
                [
                    e["seq"],
                    e["at"],
                    e["alias"],
                    e["version"],
                    e.get("previous") or "–",
                    e["action"],
                    e["actor"],
                    e["reason"],
                ]
                for e in moves
            ],
        )
    if card.requests:
        out += "<h3>Promotion requests</h3>" + table(
            ["id", "asked", "version", "by", "state", "decided by", "why"],
            [
                [
                    r["id"],
                    r["at"],
                    r["version"],
                    r["requester"],
                    r["shown_state"],
                    r.get("decided_by") or "–",
                    r["reason"],
                ]
                for r in card.requests
            ],
        )
    return out
