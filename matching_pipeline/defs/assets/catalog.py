"""The catalog asset: the normalised reference catalog and its retrieval index, by version."""


import time

import dagster as dg

from matching_pipeline.defs.resources import CatalogResource


@dg.asset(
    group_name="catalog",
    kinds={"python"},
    description=(
        "The reference catalog, validated and normalised, with its TF-IDF retrieval index and "
        "identifier maps. Its version is the content hash of the file and the index settings; a "
        "changed file is noticed by catalog_sensor, and stages record the version they used."
    ),
)
def catalog(context: dg.AssetExecutionContext, catalog_source: CatalogResource) -> dg.MaterializeResult:
    began = time.perf_counter()
    index, built = catalog_source.load_index()
    return dg.MaterializeResult(
        metadata={
            "catalog_version": index.version,
            "entries": len(index),
            "source": catalog_source.shown_location(),
            "index_path": catalog_source.index_location(index.version),
            "built_now": built,
            "seconds": round(time.perf_counter() - began, 3),
        },
        data_version=dg.DataVersion(index.version),
    )
