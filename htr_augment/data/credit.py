"""Attribution of the data a dataset, model or report comes from."""
from __future__ import annotations

import json

COPISTE_CREDIT = ("Data: \"Copiste d'un jour\", BAnQ (Bibliothèque et Archives nationales du Québec), "
                  "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)")


def data_credit(meta: dict) -> str | None:
    """The attribution a dataset's LMDB meta asks for: its own `credit`, or Copiste's CC BY notice."""
    if meta.get("credit"):
        return str(meta["credit"])
    if "copiste" in json.dumps(meta, ensure_ascii=False).lower():
        return COPISTE_CREDIT
    return None
