rule report:
    """The per-video QA page: speaker timeline, per-line fit, loudness, stage timings."""
    input:
        unpack(report_inputs),
        transcript="work/{name}/transcript.json",
        rttm="work/{name}/speakers.rttm",
        streams="work/{name}/streams.json",
        template=workflow.source_path("../report/qa_template.html"),
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
    params:
        benchmarks_dir="benchmarks/{name}",
    script:
        "../scripts/report.py"
