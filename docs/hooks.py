"""MkDocs hook: pages that show the model registry get its tables at build time, so they never disagree with it."""

from __future__ import annotations

MODEL_TABLE_MARK = "<!-- model-table -->"


def model_table() -> str:
    """The registry's models as a markdown table (what ``neurofm models`` prints)."""
    from neurofm import list_foundation_models

    table = list_foundation_models()
    columns = {
        "key": "key",
        "display_name": "model",
        "hub_repo": "published weights (Hugging Face)",
        "embedding_dim": "embedding",
        "sfreq": "rate (Hz)",
        "channels": "channels",
        "sensors": "sensors",
        "train_modes": "train modes",
        "backend": "backends",
    }
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    for row in table.to_dict("records"):
        cells = [f"`{row['key']}`", *(str(row[c]) for c in list(columns)[1:])]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 - MkDocs' hook signature
    if MODEL_TABLE_MARK in markdown:
        markdown = markdown.replace(MODEL_TABLE_MARK, model_table())
    return markdown
