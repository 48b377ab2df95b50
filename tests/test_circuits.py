import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.quantum_info import Statevector

from qresnet.circuits import amplitude_angles, check_input_rotations, quantum_head, quanv_filter
from qresnet.errors import TemplateError
from reference import filter_expectations


def _bind(template, x, w):
    values = dict(zip(template.input_params, x)) | dict(zip(template.weight_params, w))
    return template.circuit.assign_parameters(values)


@pytest.mark.parametrize("entanglement", ["chain", "ring"])
@pytest.mark.parametrize("reps", [1, 2])
def test_filter_equals_gate_by_gate_reference(rng, reps, entanglement):
    mean = quanv_filter(reps=reps, entanglement=entanglement)
    per_qubit = quanv_filter(reps=reps, entanglement=entanglement, readout="per-qubit")
    assert (mean.num_qubits, mean.num_inputs, mean.num_weights) == (4, 4, 8 * reps)
    for _ in range(5):
        x, w = rng.uniform(0, 1, 4), rng.uniform(-np.pi, np.pi, 8 * reps)
        expected = filter_expectations(x, w, reps, entanglement)
        state = Statevector(_bind(mean, x, w))
        assert state.expectation_value(mean.observables[0]).real == pytest.approx(expected.mean(), abs=1e-12)
        got = [Statevector(_bind(per_qubit, x, w)).expectation_value(o).real for o in per_qubit.observables]
        np.testing.assert_allclose(got, expected, atol=1e-12)


def test_filter_kernel_3_has_nine_qubits():
    t = quanv_filter(kernel_size=3, reps=1)
    assert (t.num_qubits, t.num_inputs, t.num_weights) == (9, 9, 18)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"kernel_size": 0}, "kernel_size"),
    ({"reps": 0}, "reps"),
    ({"entanglement": "all"}, "entanglement"),
    ({"readout": "max"}, "readout"),
])
def test_filter_rejects_bad_arguments(kwargs, fragment):
    with pytest.raises(TemplateError, match=fragment):
        quanv_filter(**kwargs)


@pytest.mark.parametrize("num_qubits, length", [(1, 2), (3, 5), (6, 49), (10, 196), (10, 1024)])
def test_head_encoding_prepares_the_normalised_padded_vector(rng, num_qubits, length):
    head = quantum_head(num_qubits=num_qubits, measured=1, reps=1)
    encoding = QuantumCircuit(num_qubits)
    for instruction in head.circuit.data:  # the encoding is everything before the first weight
        if any(p in head.weight_params for a in instruction.operation.params
               for p in getattr(a, "parameters", ())):
            break
        encoding.append(instruction)
    features = rng.normal(size=(3, length))
    features[0, ::2] = 0.0  # sparse, sign-changing vectors too
    angles = amplitude_angles(features, num_qubits)
    assert angles.shape == (3, 2**num_qubits - 1)
    for x, a in zip(features, angles):
        expected = np.zeros(2**num_qubits)
        expected[:length] = x / np.linalg.norm(x)
        state = Statevector(encoding.assign_parameters(dict(zip(head.input_params, a)))).data
        np.testing.assert_allclose(state, expected, atol=1e-10)


def test_head_observables_are_z_on_measured_qubits():
    head = quantum_head()
    assert head.num_qubits == 10 and head.num_outputs == 4 and head.measured_qubits == (0, 1, 2, 3)
    assert [o.paulis[0].to_label() for o in head.observables] == ["I" * (9 - q) + "Z" + "I" * q for q in range(4)]


def test_all_zero_features_encode_the_zero_state():
    np.testing.assert_array_equal(amplitude_angles(np.zeros((2, 49)), 10), np.zeros((2, 1023)))
    head = quantum_head(num_qubits=3, measured=1, reps=1, encoding="state", num_features=5)
    bound = head.circuit.assign_parameters(dict(zip(head.input_params + head.weight_params, [0.0] * 11)))
    np.testing.assert_allclose(Statevector(bound).data, np.eye(8)[0], atol=1e-12)  # its definition, bound


def test_amplitude_angles_reject_bad_features():
    with pytest.raises(TemplateError, match="at most 16"):
        amplitude_angles(np.ones(17), 4)
    with pytest.raises(TemplateError, match="NaN"):
        amplitude_angles(np.array([1.0, np.nan]), 1)
    with pytest.raises(TemplateError, match="measured"):
        quantum_head(num_qubits=3, measured=4)


def test_rotation_check_accepts_the_templates():
    for template in (quanv_filter(), quanv_filter(kernel_size=3, entanglement="ring"), quantum_head(num_qubits=5, measured=2)):
        assert template.check_rotations().ok, template.check_rotations().problems


def test_rotation_check_rejects_reused_nonlinear_and_rescaled_inputs():
    x = ParameterVector("x", 4)
    qc = QuantumCircuit(4)
    qc.ry(np.pi * x[0], 0)
    qc.rz(np.pi * x[0], 1)  # x0 twice
    qc.ry(np.pi * x[1] ** 2, 1)  # non-linear
    qc.rx(2 * x[2], 2)  # slope 2, not pi
    qc.u(np.pi * x[3], 0, 0, 3)  # not a Pauli rotation
    check = check_input_rotations(qc, x, np.pi)
    assert not check.ok
    text = check.describe()
    assert "x[0] enters 2 gates" in text
    assert "x[1] enters ry #2 non-linearly" in text
    assert "x[2] enters rx #3 with slope 2" in text
    assert "x[3] enters u #4, which is not a Pauli rotation" in text
    missing = check_input_rotations(QuantumCircuit(1), x[:1], np.pi)
    assert missing.problems == ("input x[0] enters no gate",)
