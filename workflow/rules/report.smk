rule report_clips:
    """The QA page's per-line audio: source and dub clip of each line, beside the page."""
    input:
        translations=lambda wc: report_inputs(wc)["translations"],
        fits=lambda wc: report_inputs(wc)["fits"],
        dubs=lambda wc: [
            f"work/{wc.name}/{lang}/dub.wav"
            for lang in settings_for(wc.name)["target_languages"]
        ],
        audio="work/{name}/audio.wav",
    output:
        clips=directory("out/{name}.report"),
    log:
        "logs/{name}/report_clips.log",
    benchmark:
        "benchmarks/{name}/report_clips.tsv"
    conda:
        "../envs/media.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=30,
    params:
        ffmpeg=config["ffmpeg"],
        cache=lambda wc: settings_for(wc.name)["report"]["clips_cache_dir"],
    script:
        "../scripts/report_clips.py"


rule report:
    """The per-video QA page: speaker timeline, per-line fit and clips, loudness, stage timings."""
    input:
        unpack(report_inputs),
        transcript="work/{name}/transcript.json",
        rttm="work/{name}/speakers.rttm",
        streams="work/{name}/streams.json",
        clips="out/{name}.report",
        benchmarks=report_benchmarks,
        template=workflow.source_path("../report/qa_page.html.j2"),
    output:
        html=report(
            "out/{name}.report.html",
            caption="../report/qa.rst",
            category="QA",
            labels={"video": "{name}"},
        ),
    log:
        "logs/{name}/report.log",
    benchmark:
        "benchmarks/{name}/report.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/report.py"
