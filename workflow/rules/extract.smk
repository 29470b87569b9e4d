rule extract:
    """Decode the dialogue stream once: 16 kHz mono for analysis, full quality for the bed."""
    input:
        video=video_path,
    output:
        analysis="work/{name}/audio.wav",
        source="work/{name}/source.wav",
        streams="work/{name}/streams.json",
    log:
        "logs/{name}/extract.log",
    benchmark:
        "benchmarks/{name}/extract.tsv"
    conda:
        "../envs/media.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=60,
    params:
        ffmpeg=config["ffmpeg"],
        audio_stream=lambda wc: settings_for(wc.name)["audio_stream"],
        source_language=lambda wc: settings_for(wc.name)["source_language"],
    script:
        "../scripts/extract.py"
