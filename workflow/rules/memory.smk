# The memory model (src/offloadbench/memory/, run as python -m offloadbench.memory): each run's
# predicted peak per device (weights, gradients, optimizer state, activations) beside what the run
# measured, with DeepSpeed's own estimate for ZeRO-3 runs. The figures, tables and claim C3 read
# results/memory/<run>.json.
# One job for every run: the predictions need no model weights and take well under a second a run,
# but DeepSpeed's estimate imports DeepSpeed (~10 s on the 2-core machine), once in one job instead
# of once in every ZeRO-3 run's. A retrained run recomputes them all.


rule memory:
    input:
        unpack(memory_inputs),
    output:
        expand("results/memory/{run}.json", run=RUNS),
    conda:
        "../envs/offloadbench.yaml"
    benchmark:
        "results/benchmarks/memory/all.tsv"
    log:
        "results/logs/memory/all.log",
    params:
        models=memory_model_configs(),
        revision=revision_arg(model_ref(config)["revision"]),
    shell:
        "python -m offloadbench.memory --spec {input.specs} --model-config {params.models:q} {params.revision}"
        " --summary {input.summaries} --out {output} > {log} 2>&1"
