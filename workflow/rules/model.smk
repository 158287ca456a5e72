# The offline base model (src/offloadbench/model.py, train.py): a tokenizer and a Llama-architecture
# model built from model.scratch with the seed, then a short pretraining on model.pretrain.dataset
# so that fine-tuning starts from a model that has learned something. Hub models (model.source: hub)
# skip both rules. A sweep's model sizes (model.sizes) are built and pretrained the same way.


rule build_model:
    input:
        corpus=f"results/corpus/{PRETRAIN_DATASET}",
    output:
        directory("results/models/{model}-init"),
    conda:
        "../envs/offloadbench.yaml"
    benchmark:
        "results/benchmarks/build_model/{model}.tsv",
    log:
        "results/logs/build_model/{model}.log",
    params:
        spec=lambda w: as_arg({"name": w.model, "scratch": MODELS[w.model], "seed": config["seed"]}),
    shell:
        "python -m offloadbench.model --spec {params.spec:q} --corpus {input.corpus} --out {output} > {log} 2>&1"


# The pretraining job's spec resolved like a run's (rule resolve in train.smk).
rule resolve_pretrain:
    input:
        model="results/models/{model}-init",
    output:
        "results/specs/pretrain-{model}.json",
    conda:
        "../envs/offloadbench.yaml"
    benchmark:
        "results/benchmarks/resolve/pretrain-{model}.tsv",
    log:
        "results/logs/resolve/pretrain-{model}.log",
    params:
        spec=lambda w: as_arg(pretrain_spec(config, w.model)),
    shell:
        "python -m offloadbench.resolve --spec {params.spec:q} --model-config {input.model} --out {output} > {log} 2>&1"


rule pretrain:
    input:
        model="results/models/{model}-init",
        spec="results/specs/pretrain-{model}.json",
        data=f"results/data/{PRETRAIN_DATASET}",
    output:
        model=directory("results/models/{model}"),
        summary="results/pretrain/{model}/summary.json",
        metrics="results/pretrain/{model}/metrics.jsonl",
    conda:
        "../envs/offloadbench.yaml"
    benchmark:
        "results/benchmarks/pretrain/{model}.tsv",
    log:
        "results/logs/pretrain/{model}.log",
    threads: all_cores()
    params:
        out=lambda w, output: os.path.dirname(output.summary),
    shell:
        "OMP_NUM_THREADS={threads} OFFLOADBENCH_WATCH_PID=$PPID python -m offloadbench.train --spec {input.spec}"
        " --data {input.data}"
        " --out {params.out} --save-model {output.model} > {log} 2>&1"
