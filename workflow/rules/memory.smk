# The memory model (src/offloadbench/memory/, run as python -m offloadbench.memory): each run's
# predicted peak per device (weights, gradients, optimizer state, activations) beside what the run
# measured, with DeepSpeed's own estimate for ZeRO-3 runs. The figures, tables and claim C3 read
# results/memory/<run>.json.


rule memory:
    input:
        unpack(run_model_config),
        summary="results/runs/{run}/summary.json",
        spec="results/specs/{run}.json",
    output:
        "results/memory/{run}.json",
    conda:
        "../envs/offloadbench.yaml"
    benchmark:
        "results/benchmarks/memory/{run}.tsv",
    log:
        "results/logs/memory/{run}.log",
    params:
        model=lambda w, input: input.get("model", model_ref(config)["path"]),
        revision=revision_arg(model_ref(config)["revision"]),
    shell:
        "python -m offloadbench.memory --spec {input.spec} --model-config {params.model:q} {params.revision}"
        " --summary {input.summary} --out {output} > {log} 2>&1"
