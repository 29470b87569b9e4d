rule diarize:
    """Who spoke when (pyannote.audio, offline weights); ids stable across a series."""
    input:
        audio="work/{name}/audio.wav",
    output:
        rttm="work/{name}/speakers.rttm",
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
        diarization=lambda wc: settings_for(wc.name)["diarization"],
    script:
        "../scripts/diarize.py"
