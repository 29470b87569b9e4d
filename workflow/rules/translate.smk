rule translate:
    """One translated line per transcript segment; a reviewer's edits file wins."""
    input:
        unpack(translation_inputs),
        transcript="work/{name}/transcript.json",
        audio="work/{name}/audio.wav",
    output:
        translation="work/{name}/{lang}/translation.json",
    log:
        "logs/{name}/translate.{lang}.log",
    benchmark:
        "benchmarks/{name}/translate.{lang}.tsv"
    conda:
        "../envs/speech.yaml"
    threads: 2
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=60,
    params:
        translation=lambda wc: settings_for(wc.name)["translation"],
        asr=lambda wc: settings_for(wc.name)["asr"],
        speed_boost=lambda wc: settings_for(wc.name)["tts"]["max_speed_boost"],
    script:
        "../scripts/translate.py"
