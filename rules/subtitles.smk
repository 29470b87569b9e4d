rule subtitles:
    """Subtitle files (SubRip and WebVTT) in one language, cut to readable cues."""
    input:
        text=subtitle_text,
    output:
        srt="out/{name}.{lang}.srt",
        vtt="out/{name}.{lang}.vtt",
    log:
        "logs/{name}/subtitles.{lang}.log",
    benchmark:
        "benchmarks/{name}/subtitles.{lang}.tsv"
    conda:
        "../envs/media.yaml"
    threads: 1
    resources:
        mem_mb=300,
        runtime=10,
    params:
        subtitles=lambda wc: settings_for(wc.name)["subtitles"],
    script:
        "../scripts/subtitles.py"
