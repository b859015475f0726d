"""Vector search over the store's embeddings; never a source of truth, always rebuildable."""

from faceledger.index.vector_index import (
    CollectionIndex,
    IndexChanges,
    Neighbour,
    VectorIndexRegistry,
)

__all__ = ["CollectionIndex", "IndexChanges", "Neighbour", "VectorIndexRegistry"]
