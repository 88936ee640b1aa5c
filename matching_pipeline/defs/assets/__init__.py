"""One module per asset family: the catalog, each stage of the cascade, the project summary."""
