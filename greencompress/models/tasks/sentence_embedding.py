"""sentence-embedding: a Hugging Face encoder with its pooling (and L2 normalisation), served for its embeddings.

Judged by its embeddings' fidelity to the original model's (mean cosine, nearest neighbour kept, recall@10:
measure/quality.py), since that is what search and retrieval serve. Its label top-1, reported beside, comes
from a nearest-centroid head whose centroids are the mean FP32 embedding of each class in the training
split, fitted once before a run (`fit_head`); the exported file returns the embedding as its second output.
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
    primary_metric = "embedding"  # served for its embeddings: judged by their fidelity, top-1 reported beside

    def fit_head(self, loaded: LoadedModel, data: DataSplits, batch_size: int) -> dict:
        from greencompress.models.data import batches
        from greencompress.models.huggingface import fit_centroids

        return fit_centroids(loaded.module, batches(data.train, batch_size), data.num_classes)
