"""Efficiency facts of an ONNX model: parameters, non-zero parameters, MACs/FLOPs of conv and
linear layers (from the graph's inferred shapes, batch 1), file size. Needs ``onnx`` and numpy only."""
from __future__ import annotations

import os
from typing import Dict

import numpy as np

__all__ = ['onnx_efficiency']


def _dims(value_info) -> list:
    return [d.dim_value if d.HasField('dim_value') else 1 for d in value_info.type.tensor_type.shape.dim]


def onnx_efficiency(path: str) -> Dict:
    """Count parameters and MACs of the model at ``path``.

    Returns
    -------
    dict
        ``params``, ``nonzero_params``, ``macs``, ``flops`` (2 x MACs), ``file_bytes`` and
        ``initializers`` (name -> ``{'size', 'zeros'}``) for per-tensor sparsity.
    """
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    inferred = shape_inference.infer_shapes(model)
    shapes = {vi.name: _dims(vi) for vi in list(inferred.graph.value_info) + list(inferred.graph.input)
              + list(inferred.graph.output)}
    macs = 0
    for node in model.graph.node:
        out = shapes.get(node.output[0])
        if out is None:
            continue
        out_elems = int(np.prod(out))
        if node.op_type == 'Conv':
            w = inits.get(node.input[1])
            if w is not None:
                macs += out_elems * int(np.prod(w.shape[1:]))
        elif node.op_type in ('Gemm', 'MatMul'):
            w = inits.get(node.input[1])
            if w is None:
                continue
            trans_b = any(a.name == 'transB' and a.i == 1 for a in node.attribute)
            k = w.shape[1] if (node.op_type == 'Gemm' and trans_b) else w.shape[0]
            macs += out_elems * int(k)
    params = sum(int(a.size) for a in inits.values())
    nonzero = sum(int(np.count_nonzero(a)) for a in inits.values())
    return {'params': params, 'nonzero_params': nonzero, 'macs': macs, 'flops': 2 * macs,
            'file_bytes': os.path.getsize(path),
            'initializers': {n: {'size': int(a.size), 'zeros': int(a.size - np.count_nonzero(a))}
                             for n, a in inits.items()}}
