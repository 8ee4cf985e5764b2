"""Until every test imports ``scripts.book_config``: the same names, from there."""

from scripts.book_config import (  # noqa: F401
    ROOT,
    config,
    install_url,
    notebooks,
    notebooks_in_reading_order,
    pins,
    setup_cell_source,
    toc_documents,
)
