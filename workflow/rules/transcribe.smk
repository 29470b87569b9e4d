# A checkpoint: with source_language "auto", the language it detects names the
# source subtitle files (out/{name}.{lang}.srt), so the rest of the graph waits for it.
checkpoint transcribe:
    """Speech to text with word timestamps, one speaker per segment (faster-whisper)."""
    input:
        audio="work/{name}/audio.wav",
        rttm="work/{name}/speakers.rttm",
    output:
        transcript="work/{name}/transcript.json",
    log:
        "logs/{name}/transcribe.log",
    benchmark:
        "benchmarks/{name}/transcribe.tsv"
    conda:
        "../envs/speech.yaml"
    # CTranslate2 runs Whisper base faster on one thread than on two here (50 s against
    # 70 s for 10 minutes), and the other core takes separate
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=120,
    params:
        asr=lambda wc: settings_for(wc.name)["asr"],
        language=lambda wc: settings_for(wc.name)["source_language"],
    script:
        "../scripts/transcribe.py"
