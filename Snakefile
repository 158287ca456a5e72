# offloadbench: QLoRA + CPU offload versus DeepSpeed ZeRO-3 offload.
# This file only wires. The config is validated in workflow/rules/common.smk before any job;
# the steps live in workflow/rules/*.smk and call the offloadbench package.
#
#   snakemake --cores all                                   # default profile (offline, CPU)
#   snakemake --cores all --configfile configs/paper.yaml   # the paper (GPU, hub access)

from snakemake.utils import min_version

min_version("9.0")


# Found relative to this file, so `--directory <elsewhere>` keeps the default profile underneath.
configfile: f"{workflow.basedir}/configs/config.yaml"


# `snakemake --report results/report.html`: this text opens the report; results marked report()
# in the rules (claims, tables, figures, memory model, reference comparison, provenance) follow.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/memory.smk"
include: "workflow/rules/aggregate.smk"


# Jobs of seconds run where Snakemake runs, never through a cluster queue, whose latency (the Slurm
# plugin polls every 40 s or more) would dominate them: the data (corpus extraction or download,
# tokenization), the scratch model's tokenizer and initial weights, the hub access check, specs,
# predictions, tables, claims, figures. Measured on the tiny profile (2 cores, docs/cluster.md):
# each of these takes 0-14 s; what goes to the queue (pretrain, train, evaluate_base) uses every
# core of a node for 30 s or more.
localrules:
    all,
    corpus,
    tokenize,
    hub_access,
    build_model,
    resolve,
    resolve_pretrain,
    memory,
    aggregate,
    claims,
    numbers,
    figures,
    compare_reference,


rule all:
    input:
        all_outputs(),
    default_target: True
