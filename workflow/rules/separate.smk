rule separate:
    """The source's music and effects without its dialogue: the bed the dub is mixed over."""
    input:
        source="work/{name}/source.wav",
    output:
        bed="work/{name}/bed.wav",
        report="work/{name}/separation.json",
    log:
        "logs/{name}/separate.log",
    benchmark:
        "benchmarks/{name}/separate.tsv"
    conda:
        "../envs/speech.yaml"
    # one thread, beside transcribe: on 2 cores the two together took 50 s of a 10-minute
    # video, against 99 s one after the other on two threads each (make bench)
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
    params:
        method=lambda wc: settings_for(wc.name)["mix"]["separation"],
        dtln_model=lambda wc: settings_for(wc.name)["mix"]["dtln_model"],
    script:
        "../scripts/separate.py"
