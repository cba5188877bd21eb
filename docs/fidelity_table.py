"""Print the fidelity table of docs/fidelity.md from the model registry: ``python docs/fidelity_table.py``.

The table is generated, so the page can never disagree with what neurofm does;
``tests/test_fidelity.py`` checks that the page holds it as printed here.
"""

from __future__ import annotations


def fidelity_table() -> str:
    """One markdown row per model and input convention."""
    from neurofm.models.registry import get_model_spec, list_model_keys, model_conventions

    lines = [
        "| model | convention | what its weights saw | neurofm's default | instead | source |",
        "|---|---|---|---|---|---|",
    ]
    for key in list_model_keys():
        name = get_model_spec(key).display_name
        for row in model_conventions(key).itertuples(index=False):
            cells = [
                name,
                row.convention,
                row.pretraining,
                row.neurofm,
                row.alternative and f"`{row.alternative}`",
                row.source,
            ]
            lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |")
            name = ""
    return "\n".join(lines)


if __name__ == "__main__":
    print(fidelity_table())
