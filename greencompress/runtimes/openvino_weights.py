"""MatMulNBits zero points as OpenVINO's CPU plugin reads compressed weights fastest.

ONNX Runtime packs a layer's zero points two to a byte per output row, padding a row with an odd number of groups
(SmolLM2's 576 inputs in groups of 64: 9 groups, 5 bytes). OpenVINO's ONNX reader keeps the padded u4 constant and
slices the padding off at run time; the CPU plugin then takes the slice's float result as the zero points and
computes through a slower path, without the int8 activations it uses for compressed weights otherwise (one product
of SmolLM2's up_proj shape: 1.2x the time of the same codes with u4 zero points for a decode row, 1.6x for 128
prefill rows; scripts/bench_openvino_weights.py, AMD EPYC, 2026-12-04). Slicing the constant once here gives the
plugin the u4 zero points it expects: the same values, so the same weights.
"""

from __future__ import annotations

import numpy as np

_CODES = ("u4", "u8")  # the element types of MatMulNBits' zero points as OpenVINO reads them (4 and 8 bits)


def slice_zero_points(model) -> int:
    """Replace each Slice of a converted u4/u8 Constant (a padded zero-point tensor) by the converted sliced
    Constant; returns how many."""
    import openvino
    import openvino.opset13 as ops

    folded = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Slice" or node.get_input_size() != 5:
            continue
        convert = node.input_value(0).get_node()
        if convert.get_type_name() != "Convert":
            continue
        stored = convert.input_value(0).get_node()
        bounds = [node.input_value(index).get_node() for index in range(1, 5)]
        if (
            stored.get_type_name() != "Constant"
            or stored.get_element_type().get_type_name() not in _CODES
            or any(bound.get_type_name() != "Constant" for bound in bounds)
        ):
            continue
        codes = _unpacked(stored)
        index = [slice(None)] * codes.ndim
        start, stop, step, axes = (bound.data.astype(np.int64).reshape(-1) for bound in bounds)
        for first, last, stride, axis in zip(start, stop, step, axes):
            index[int(axis)] = slice(int(first), int(last), int(stride))
        sliced = np.ascontiguousarray(codes[tuple(index)])
        element_type = openvino.Type.u4 if stored.get_element_type().get_type_name() == "u4" else openvino.Type.u8
        replacement = ops.convert(ops.constant(sliced, dtype=element_type), convert.get_output_element_type(0))
        node.output(0).replace(replacement.output(0))
        folded += 1
    return folded


def _unpacked(stored) -> np.ndarray:
    """A u4 or u8 Constant's values, one per element (u4 data comes two to a byte, low nibble first)."""
    shape = tuple(stored.get_output_shape(0))
    data = np.asarray(stored.data, dtype=np.uint8).reshape(-1)
    if stored.get_element_type().get_type_name() == "u4":
        data = np.stack([data & 0x0F, data >> 4], axis=-1).reshape(-1)
    return data[: int(np.prod(shape))].reshape(shape)
