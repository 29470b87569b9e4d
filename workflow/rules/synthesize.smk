rule synthesize:
    """One wav per translated line, each speaker with their own voice (cached per line)."""
    input:
        unpack(synthesis_inputs),
        translation="work/{name}/{lang}/translation.json",
        audio="work/{name}/audio.wav",
    output:
        tts=directory("work/{name}/{lang}/tts"),
    log:
        "logs/{name}/synthesize.{lang}.log",
    benchmark:
        "benchmarks/{name}/synthesize.{lang}.tsv"
    conda:
        "../envs/tts.yaml"
    threads: 2
    resources:
        mem_mb=lambda wc, attempt: 1500 * attempt,
        runtime=120,
    params:
        tts=lambda wc: settings_for(wc.name)["tts"],
    script:
        "../scripts/synthesize.py"
