"""mot block (see DESIGN.md)."""

__all__: list[str] = []
