"""sentence-embedding: a Hugging Face encoder with its pooling (and L2 normalisation), served for its embeddings.

Judged by its embeddings' fidelity to the original model's (mean cosine, nearest neighbour kept, recall@10:
measure/quality.py), since that is what search and retrieval serve. Its label top-1, reported beside, comes
from a nearest-centroid head whose centroids are the mean FP32 embedding of each class in the training
split, fitted once before a run (`fit_head`). The head scores the served embeddings outside the graph
(`scorer`): the exported file returns the sentence embedding and the token states, nothing of the data set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from greencompress.models.tasks.text_classification import TokenTask

if TYPE_CHECKING:
    from torch import nn

    from greencompress.models.data import DataSplits
    from greencompress.models.serving import Scorer
    from greencompress.models.sources import LoadedModel


# How a user loads a deploy folder (pipeline/deploy.py): plain onnxruntime, or sentence-transformers' ONNX backend.
LOADING = """import onnxruntime
from transformers import AutoTokenizer

folder = "FOLDER"
tokenizer = AutoTokenizer.from_pretrained(folder)
session = onnxruntime.InferenceSession(f"{folder}/onnx/model.onnx")
tokens = tokenizer(["Your text here."], padding=True, return_tensors="np")
feed = {i.name: tokens[i.name] for i in session.get_inputs()}
embeddings = session.run(["sentence_embedding"], feed)[0]
# or, with sentence-transformers (ONNX backend):
# SentenceTransformer(folder, backend="onnx").encode(["Your text here."])"""


class SentenceEmbedding(TokenTask):
    name = "sentence-embedding"
    aliases = ("feature-extraction", "sentence-similarity")  # Hugging Face's names for embedding models
    primary_metric = "embedding"  # served for its embeddings: judged by their fidelity, top-1 reported beside

    def fit_head(self, loaded: LoadedModel, data: DataSplits, batch_size: int) -> dict:
        from greencompress.models.data import batches
        from greencompress.models.huggingface import fit_centroids

        return fit_centroids(loaded.module, batches(data.train, batch_size), data.num_classes)

    def loading_snippet(self, folder: str) -> str:
        return LOADING.replace("FOLDER", folder)

    def scorer(self, module: nn.Module) -> Scorer:
        """Class scores: the cosine of the served sentence embedding (the first output) to each fitted centroid."""
        centroids = module.centroids.detach().cpu().numpy().astype(np.float32)

        def score(outputs: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
            embedding = outputs[0]
            unit = embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
            return unit @ centroids.T, embedding

        return score
