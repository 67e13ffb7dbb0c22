"""sentence-embedding: a Hugging Face encoder with its pooling (and L2 normalisation), served for its embeddings.

Scored on labelled text by a nearest-centroid head whose centroids are the mean FP32 embedding of each class
in the training split, fitted once before a run (`fit_head`); the exported file returns the embedding as
its second output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from greencompress.models.tasks.text_classification import TokenTask

if TYPE_CHECKING:
    from greencompress.models.data import DataSplits
    from greencompress.models.sources import LoadedModel


class SentenceEmbedding(TokenTask):
    name = "sentence-embedding"
    aliases = ("feature-extraction", "sentence-similarity")  # Hugging Face's names for embedding models

    def fit_head(self, loaded: LoadedModel, data: DataSplits, batch_size: int) -> dict:
        from greencompress.models.data import batches
        from greencompress.models.huggingface import fit_centroids

        return fit_centroids(loaded.module, batches(data.train, batch_size), data.num_classes)
