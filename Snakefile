# dubflow: a video in, a dubbed mkv out. The graph and its file names: ../shared/DESIGN.md
# in the project's steering docs and the README. This file is only a table of contents.


# Defaults ship with the workflow, so it also runs from a project folder elsewhere
# (snakemake -s path/to/dubflow/Snakefile); --configfile adds the project's own keys.
configfile: f"{workflow.basedir}/config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/extract.smk"
include: "rules/diarize.smk"
include: "rules/transcribe.smk"
include: "rules/translate.smk"
include: "rules/subtitles.smk"
include: "rules/synthesize.smk"
include: "rules/mix.smk"
include: "rules/mux.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        expand("out/{name}.mkv", name=sorted(SAMPLES)),
        expand("out/{name}.report.html", name=sorted(SAMPLES)),
