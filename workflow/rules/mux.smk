rule mux:
    """The deliverable: video copied, a dub track per language, the original, subtitles; all tagged."""
    input:
        unpack(mux_inputs),
        video=video_path,
        transcript="work/{name}/transcript.json",
    output:
        mkv="out/{name}.mkv",
    log:
        "logs/{name}/mux.log",
    benchmark:
        "benchmarks/{name}/mux.tsv"
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
        keep=lambda wc: settings_for(wc.name)["mux"]["keep"],
    script:
        "../scripts/mux.py"
