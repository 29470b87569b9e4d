"""Device choice: cpu stays cpu, auto falls back to cpu without a GPU, cuda says why not."""

import pytest

from dubflow.device import cuda_devices, resolve_device
from dubflow.errors import ConfigError

pytestmark = pytest.mark.model  # loads Whisper


def test_cpu_and_auto_without_a_gpu():
    assert resolve_device("cpu", "asr.device") == "cpu"
    assert resolve_device(None, "asr.device") == "cpu"
    expected = "cuda" if cuda_devices() else "cpu"
    assert resolve_device("auto", "asr.device") == expected


@pytest.mark.skipif(cuda_devices() > 0, reason="this machine has a GPU")
def test_cuda_without_a_gpu_names_the_key_and_the_fix():
    with pytest.raises(ConfigError, match=r"'translation.device' asks for cuda.*auto"):
        resolve_device("cuda", "translation.device")


def test_whisper_model_loads_on_the_resolved_device(tiny_asr):
    import transcribe

    model = transcribe.load_model(tiny_asr["model"], "int8", 1, device="auto")
    assert model.model.device == ("cuda" if cuda_devices() else "cpu")
