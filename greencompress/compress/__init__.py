"""Compression techniques (technique.py: the seam; prune.py, depth.py, finetune.py, qat.py, quantize.py;
weight_only.py, dynamic_int8.py, decoder_surgery.py and distill.py for causal LMs) and the
training they use (training.py, distributed.py). Importing the package registers the built-in techniques, in this
order."""

from greencompress.compress.depth import Depth
from greencompress.compress.distill import Distill
from greencompress.compress.dynamic_int8 import DynamicInt8
from greencompress.compress.finetune import Finetune
from greencompress.compress.prune import Prune
from greencompress.compress.quantize import Quantize
from greencompress.compress.technique import TECHNIQUES
from greencompress.compress.weight_only import WeightOnly

for _builtin in (Depth(), Prune(), Finetune(), Quantize(), WeightOnly(), DynamicInt8(), Distill()):
    TECHNIQUES.register(_builtin)
