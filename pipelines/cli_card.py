"""`fmpipe card`: one self-contained HTML page per model version, or two versions side by side.

  fmpipe card MODEL@staging [-o card.html] [--open]
  fmpipe card MODEL/7
  fmpipe card MODEL --compare 7 8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from components.core.errors import FmpipeError
from pipelines.cli_registry import _connect, _one_line_errors, params_arguments, user_path


def cmd_card(args: argparse.Namespace) -> int:
    from components.card.compare import render_compare
    from components.card.gather import gather, resolve
    from components.card.render import render

    _, client = _connect(args)
    started = time.perf_counter()
    with _one_line_errors(client):
        if args.compare:
            if "@" in args.spec or "/" in args.spec:
                raise FmpipeError("--compare takes the model's name and two versions: fmpipe card MODEL "
                                  "--compare 7 8")
            cards = [gather(client, *resolve(client, f"{args.spec}/{v}")) for v in args.compare]
            page = render_compare(*cards)
            default = f"{args.spec}-v{args.compare[0]}-vs-v{args.compare[1]}.html"
        else:
            card = gather(client, *resolve(client, args.spec))
            page, default = render(card), f"{card.model}-v{card.version}.card.html"
    out = Path(args.output or default)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    print(f"wrote {out} ({len(page.encode()) / 1e6:.2f} MB in {time.perf_counter() - started:.1f} s)")
    if args.open:
        _open(out)
    return 0


def _open(path: Path) -> None:
    import webbrowser

    if not webbrowser.open(path.resolve().as_uri()):
        print(f"no browser to open here; open {path.resolve()} yourself", file=sys.stderr)


def add_card_command(sub: Any) -> None:
    text = ("write the model card of a version: one self-contained HTML page (lineage, training curves, "
            "evaluation, explanations, export, registry history), or two versions side by side")
    p = sub.add_parser("card", help=text, description=text + ". Built from what the registry and the "
                       "runs recorded, so it works for any version; a section without records says so.")
    p.add_argument("spec", metavar="MODEL@ALIAS|MODEL/VERSION",
                   help="the version: by alias (MODEL@staging) or number (MODEL/7); with --compare, MODEL")
    p.add_argument("-o", "--output", type=user_path,
                   help="the HTML file (default: MODEL-vN.card.html, or MODEL-vA-vs-vB.html)")
    p.add_argument("--open", action="store_true", help="open it in the default browser")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="two versions side by side: metrics, slices, data, params that changed")
    params_arguments(p)
    p.set_defaults(func=cmd_card)
