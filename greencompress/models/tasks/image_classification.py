"""image-classification: a CNN (any source) or a vision transformer (a Hugging Face folder) fed one image tensor.

Top-1 on labelled images is the primary metric. A CNN's structure is its channels and residual blocks; a
vision transformer's is an encoder's (heads, FFN neurons, layers), and its data must be prepared as its
image processor prepares images, its classes matched to its head's labels by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from greencompress.core.errors import DataError
from greencompress.models.tasks.base import Structure, Task, Workload

if TYPE_CHECKING:
    from greencompress.models.data import DataSpec, DataSplits
    from greencompress.models.sources import LoadedModel, ModelSpec


class ImageClassification(Task):
    name = "image-classification"
    sources = ("builtin", "torchvision", "checkpoint", "callable", "huggingface")
    data_kinds = ("digits", "imagefolder", "cifar10", "synthetic")

    def structure(self, model: ModelSpec) -> Structure:
        return "encoder" if model.source == "huggingface" else "channels"

    def preflight(self, model: ModelSpec, data: DataSpec, workload: Workload) -> None:
        """The model's files, an image folder's layout; for a vision transformer, the data prepared as its image
        processor prepares images."""
        from greencompress.models.sources import check_model_files

        config = check_model_files(model)
        if data.kind == "imagefolder":
            from greencompress.models.data import check_image_folder

            check_image_folder(data)
        if model.source == "huggingface":
            from greencompress.models.huggingface import check_image_data, image_preprocessing, model_folder

            folder = model_folder(model.path, model.package)
            check_image_data(image_preprocessing(folder, config), data, folder)

    def needs_new_head(self, config: dict) -> bool:
        heads = config.get("architectures")
        return heads is not None and not any(str(name).endswith("ForImageClassification") for name in heads)

    def data_hints(self, model: Path, config: dict) -> dict:
        if "image_size" not in config:  # a CNN: the data says
            return {}
        from greencompress.models.huggingface import image_preprocessing, model_folder

        prepared = image_preprocessing(model_folder(model, None), config)
        return {"image_size": prepared.size[0], "mean": list(prepared.mean), "std": list(prepared.std)}

    def serving_files(self, loaded, data, splits, module, folder) -> list[str]:
        """The preprocessing the run used; a vision transformer's config and image processor file too."""
        written = super().serving_files(loaded, data, splits, module, folder)
        if loaded.hugging_face_folder is None:
            return written
        from greencompress.models.huggingface import write_serving_files

        return written + write_serving_files(module, None, folder, loaded.hugging_face_folder, 0)

    def load_data(self, loaded: LoadedModel, data: DataSpec, seed: int) -> DataSplits:
        """Images; for a vision transformer, checked against its processor and labelled in its head's order."""
        from greencompress.models.data import load_data

        preprocessing = loaded.image_preprocessing
        if preprocessing is None:
            return load_data(data, seed)
        from greencompress.models.huggingface import check_image_data

        check_image_data(preprocessing, data, loaded.provenance["folder"])
        splits = load_data(data, seed, head_labels=loaded.label_names)
        head = loaded.module.network.config
        if splits.labelled and head.num_labels != splits.num_classes:
            raise DataError(
                f"data: {splits.num_classes} classes, but the model's head has {head.num_labels} outputs "
                f"with no label names to match them by; set model.num_classes: {splits.num_classes} with "
                f"a finetune stage for a new head, or name the head's labels (config.json id2label)"
            )
        return splits
