rule diarize:
    """Who spoke when (pyannote.audio, offline weights): this episode's own result only,
    ids by first appearance, and each speaker's centroid embedding for speaker_ids."""
    input:
        audio="work/{name}/audio.wav",
    output:
        rttm="work/{name}/speakers.local.rttm",
        centroids="work/{name}/speaker_centroids.json",
    log:
        "logs/{name}/diarize.log",
    benchmark:
        "benchmarks/{name}/diarize.tsv"
    # first when it competes with separate: transcribe waits for it, separate does not
    priority: 1
    conda:
        "../envs/speech.yaml"
    threads: 2
    resources:
        mem_mb=lambda wc, attempt: 3000 * attempt,
        runtime=120,
    params:
        diarization=lambda wc: diarization_model_settings(wc.name),
    script:
        "../scripts/diarize.py"


rule speaker_ids:
    """The episode's final ids (work/{name}/speakers.rttm): always this rule, so the graph
    is the same with or without a series. Without one it copies the local RTTM; with one
    it replays the series' episodes named before this one (speaker_ids_inputs) and matches
    this episode's speakers to theirs. Cheap and model-free: run beside Snakemake itself.
    """
    input:
        unpack(speaker_ids_inputs),
    output:
        rttm="work/{name}/speakers.rttm",
    log:
        "logs/{name}/speaker_ids.log",
    benchmark:
        "benchmarks/{name}/speaker_ids.tsv"
    priority: 1
    conda:
        "../envs/speech.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    params:
        diarization=lambda wc: {
            "series": settings_for(wc.name)["diarization"]["series"],
            "match_threshold": settings_for(wc.name)["diarization"]["match_threshold"],
        },
    script:
        "../scripts/speaker_ids.py"


localrules:
    speaker_ids,
