"""OnnxClassifier, the torch-free onnxruntime runtime: inputs and graphs it refuses, latency it reports."""
import numpy as np
import pytest

from nni_bap.export import CorruptModelError, InputValueError, OnnxClassifier


def _onnx(path, outputs=1, out_shape=('batch', 3)):
    """A linear classifier 4 -> 3 as an ONNX graph, with ``outputs`` copies of its logits as outputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, 'w')
    nodes = [helper.make_node('MatMul', ['x', 'w'], ['logits'])]
    nodes += [helper.make_node('Identity', ['logits'], [f'copy{i}']) for i in range(1, outputs)]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(out_shape))
            for n in ['logits'] + [f'copy{i}' for i in range(1, outputs)]]
    graph = helper.make_graph(nodes, 'g', [helper.make_tensor_value_info('x', TensorProto.FLOAT, ['batch', 4])],
                              outs, [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)], ir_version=8)
    onnx.save(model, str(path))
    return str(path)


def test_onnx_classifier_refuses_non_finite_inputs(tmp_path):
    """Issue 10 case 4 (OnnxClassifier): an all-NaN batch labelled 0 is refused (it used to score accuracy 1.0)."""
    clf = OnnxClassifier(_onnx(tmp_path / 'm.onnx'), threads=1)
    x = np.random.default_rng(0).random((5, 4), dtype=np.float32)
    assert clf.logits(x).shape == (5, 3)
    with pytest.raises(InputValueError, match='20 NaN or infinite values'):
        clf.accuracy(np.full((5, 4), np.nan, np.float32), np.zeros(5, np.int64))
    x[2, 1] = np.inf
    with pytest.raises(ValueError, match='1 NaN or infinite values'):  # InputValueError is a ValueError
        clf.predict(x)


def test_onnx_latency_runs_the_batch_it_reports(tmp_path):
    """Issue 10 case 4 (OnnxClassifier): latency(batch_size=8, x=2 rows) tiles the rows up to 8 and runs 8
    (it used to run 2 and report 8)."""
    clf = OnnxClassifier(_onnx(tmp_path / 'm.onnx'), threads=1)
    ran, run = [], clf.session.run
    clf.session.run = lambda names, feed: ran.append(next(iter(feed.values())).shape) or run(names, feed)
    x = np.random.default_rng(0).random((2, 4), dtype=np.float32)
    lat = clf.latency(batch_size=8, warmup=1, repeats=3, x=x)
    assert ran == [(8, 4)] * 4
    assert lat['batch_size'] == 8 and lat['rows_given'] == 2 and lat['tiled'] is True and lat['median_ms'] > 0
    ran.clear()
    lat = clf.latency(batch_size=1, warmup=0, repeats=2, x=x)
    assert ran == [(1, 4)] * 2 and lat['batch_size'] == 1 and lat['tiled'] is False
    with pytest.raises(InputValueError):
        clf.latency(batch_size=2, x=np.full((2, 4), np.nan, np.float32))


@pytest.mark.parametrize('outputs, out_shape, message', [(3, ('batch', 3), '1 inputs and 3 outputs'),
                                                         (1, ('batch', 3, 2), 'expected \\(batch, classes\\)')])
def test_onnx_classifier_refuses_a_graph_that_is_not_a_classifier(tmp_path, outputs, out_shape, message):
    """Issue 10 case 6 (OnnxClassifier): a 3-output graph (or one whose output is not (batch, classes)) is refused
    at load time instead of silently scoring output 0."""
    path = _onnx(tmp_path / 'multi.onnx', outputs, out_shape)
    with pytest.raises(CorruptModelError, match=message) as info:
        OnnxClassifier(path)
    assert path in str(info.value)


@pytest.mark.parametrize('value', [np.nan, np.inf])
def test_onnx_classifier_refuses_non_finite_weights(tmp_path, value):
    """Issue 22 case 1: a graph with a NaN bias loaded and was evaluated (exit 0, no warning)."""
    import onnx
    from onnx import numpy_helper
    path = _onnx(tmp_path / 'm.onnx')
    model = onnx.load(path)
    w = numpy_helper.to_array(model.graph.initializer[0]).copy()
    w[1, 2] = value
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, 'w'))
    onnx.save(model, path)
    with pytest.raises(CorruptModelError, match=r'm.onnx holds non-finite weights \(w\); refused'):
        OnnxClassifier(path)


def test_onnx_classifier_refuses_weights_kept_outside_the_file(tmp_path):
    """A graph may name an external file for its weights (``../../etc/...``): an exported classifier never does."""
    import onnx
    path = _onnx(tmp_path / 'm.onnx')
    model = onnx.load(path)
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location='w.bin',
              size_threshold=0)
    with pytest.raises(CorruptModelError, match="keeps the weight 'w' in an external file"):
        OnnxClassifier(path)
