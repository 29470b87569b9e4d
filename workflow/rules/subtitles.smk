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


rule subtitles_ass:
    """Advanced SubStation subtitles (when subtitles.formats lists ass): same cues."""
    input:
        text=subtitle_text,
    output:
        ass="out/{name}.{lang}.ass",
    log:
        "logs/{name}/subtitles_ass.{lang}.log",
    benchmark:
        "benchmarks/{name}/subtitles_ass.{lang}.tsv"
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
