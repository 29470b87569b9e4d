rule mix:
    """Lines at their source times, fitted to their slots, over the ducked bed (the original where no line is voiced), at target loudness."""
    input:
        source=mix_bed,
        original="work/{name}/source.wav",
        tts="work/{name}/{lang}/tts",
    output:
        dub="work/{name}/{lang}/dub.wav",
        track="work/{name}/{lang}/dub.mka",
        fit="work/{name}/{lang}/fit.json",
    log:
        "logs/{name}/mix.{lang}.log",
    benchmark:
        "benchmarks/{name}/mix.{lang}.tsv"
    conda:
        "../envs/media.yaml"
    threads: 2
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=60,
    params:
        mix=lambda wc: settings_for(wc.name)["mix"],
        tempo_cache=lambda wc: f"{settings_for(wc.name)['tts']['cache_dir']}/tempo",
        gain_memo=lambda wc: f"{settings_for(wc.name)['mix']['cache_dir']}/gain/{wc.name}.{wc.lang}.json",
        track_cache=lambda wc: f"{settings_for(wc.name)['mix']['cache_dir']}/aac",
        ffmpeg=config["ffmpeg"],
    script:
        "../scripts/mix.py"
