"""Two versions of a model side by side: what a reviewer reads before approving a promotion."""

from __future__ import annotations

from typing import Any

from components.card.gather import CardData
from components.card.render import CSS, Raw, esc, ncell, table


def step_params(card: CardData) -> dict[str, str]:
    """Every parameter the version's step runs logged, as `step.name`."""
    return {f"{step}.{k}": v for step, info in card.steps.items() for k, v in info.get("params", {}).items()}


def changed_params(a: CardData, b: CardData) -> list[tuple[str, str, str]]:
    pa, pb = step_params(a), step_params(b)
    return [(k, pa.get(k, "–"), pb.get(k, "–")) for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k)]


def _delta_cell(old: Any, new: Any, higher_is_better: bool = True) -> str:
    try:
        delta = float(new) - float(old)
    except (TypeError, ValueError):
        return Raw("<td></td>")
    worse = delta < 0 if higher_is_better else delta > 0
    style = ' style="color:#8a1c13;font-weight:600"' if worse and abs(delta) > 1e-9 else ""
    return Raw(f'<td class="num"{style}>{delta:+.4f}</td>')


def _per_class(evaluation: dict) -> dict[str, dict]:
    """Per-class figures of an evaluation record (its report also holds overall rows: skipped)."""
    per_class = (evaluation.get("model") or {}).get("per_class") or {}
    return {k: v for k, v in per_class.items() if isinstance(v, dict) and not k.endswith(" avg")}


def _side_by_side(first: dict[str, dict], second: dict[str, dict], key: str, va: str, vb: str) -> str:
    """One row per name in either: its `key` figure in each version and the change."""
    rows = []
    for name in sorted(set(first) | set(second)):
        x, y = (first.get(name) or {}).get(key), (second.get(name) or {}).get(key)
        rows.append([name, ncell(x), ncell(y), _delta_cell(x, y)])
    return table(["", va, vb, "change"], rows)


def render_compare(a: CardData, b: CardData) -> str:
    """The page comparing version a (the one in place, usually) with version b (the candidate)."""
    va, vb = f"v{a.version}", f"v{b.version}"
    parts = [
        f"<h1>{esc(a.model)}: version {esc(a.version)} against version {esc(b.version)}</h1>",
        f"<p class=sub>{esc(va)} holds {esc(', '.join(a.aliases) or 'no alias')}; {esc(vb)} holds "
        f"{esc(', '.join(b.aliases) or 'no alias')}. Red: {esc(vb)} is worse.</p>",
    ]
    names = sorted({k for c in (a, b) for k in c.tags if k.startswith("metric.")})
    rows = [
        [
            n.removeprefix("metric."),
            ncell(a.tags.get(n)),
            ncell(b.tags.get(n)),
            _delta_cell(a.tags.get(n), b.tags.get(n)),
        ]
        for n in names
    ]
    for tag in ("fmpipe.blessed", "fmpipe.parity_passed"):
        rows.append([tag.removeprefix("fmpipe."), a.tags.get(tag, "–"), b.tags.get(tag, "–"), ""])
    parts.append("<h2>Metrics (test split)</h2>" + table(["metric", va, vb, "change"], rows))

    eva = a.records.get("evaluation/evaluation.json") or {}
    evb = b.records.get("evaluation/evaluation.json") or {}
    slices_a, slices_b = eva.get("slices") or {}, evb.get("slices") or {}
    for title, first, second, key in (("Per class F1", _per_class(eva), _per_class(evb), "f1-score"),
                                      ("Slices (macro-F1)", slices_a, slices_b, "macro_f1")):
        if first or second:
            parts.append(f"<h2>{title}</h2>" + _side_by_side(first, second, key, va, vb))

    data = [
        ("data set", "fmpipe.data_source"),
        ("data md5", "fmpipe.data_md5"),
        ("data version (.dvc commit)", "fmpipe.data_dvc_commit"),
        ("code commit", "fmpipe.git_commit"),
        ("base model", "fmpipe.base_model"),
        ("params digest", "fmpipe.params_digest"),
    ]
    rows = [
        [
            label,
            a.tags.get(tag, "–"),
            b.tags.get(tag, "–"),
            "changed" if a.tags.get(tag) != b.tags.get(tag) else "",
        ]
        for label, tag in data
    ]
    for label, key in (("rows kept", "rows_out"), ("rows read", "rows_in")):
        x = ((a.records.get("ingest_report.json") or {}).get("clean") or {}).get(key, "–")
        y = ((b.records.get("ingest_report.json") or {}).get("clean") or {}).get(key, "–")
        rows.append([label, x, y, "changed" if x != y else ""])
    parts.append("<h2>Data and code</h2>" + table(["", va, vb, ""], rows))

    changed = changed_params(a, b)
    parts.append(
        "<h2>Parameters that changed</h2>"
        + (table(["step.parameter", va, vb], [list(c) for c in changed]) if changed else "<p>none</p>")
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{esc(a.model)} {esc(va)} vs {esc(vb)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(parts)}</main></body></html>"
    )
