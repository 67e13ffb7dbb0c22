"""Tasks (base.py: the seam): image-classification, text-classification, sentence-embedding, text-generation.
Importing the
package registers the built-in tasks."""

from greencompress.models.tasks.base import TASKS, Structure, Task, Workload, task_named, task_names
from greencompress.models.tasks.image_classification import ImageClassification
from greencompress.models.tasks.sentence_embedding import SentenceEmbedding
from greencompress.models.tasks.text_classification import TextClassification
from greencompress.models.tasks.text_generation import TextGeneration

for _builtin in (ImageClassification(), TextClassification(), SentenceEmbedding(), TextGeneration()):
    TASKS.register(_builtin)

__all__ = ["TASKS", "Structure", "Task", "Workload", "task_named", "task_names"]
