# The offline base model (src/offloadbench/model.py, train.py): a tokenizer and a Llama-architecture
# model built from model.scratch with the seed, then a short pretraining on model.pretrain.dataset
# so that fine-tuning starts from a model that has learned something. Hub models (model.source: hub)
# skip both rules.


rule build_model:
    input:
        corpus=f"results/corpus/{PRETRAIN_DATASET}",
    output:
        directory(f"results/models/{MODEL}-init"),
    conda:
        "../../environment.yml"
    log:
        f"results/logs/build_model/{MODEL}.log",
    params:
        spec=as_arg({"name": MODEL, "scratch": config["model"].get("scratch"), "seed": config["seed"]}),
    shell:
        "python -m offloadbench.model --spec {params.spec:q} --corpus {input.corpus} --out {output} > {log} 2>&1"


rule pretrain:
    input:
        model=rules.build_model.output[0],
        data=f"results/data/{PRETRAIN_DATASET}",
    output:
        model=directory(f"results/models/{MODEL}"),
        summary=f"results/pretrain/{MODEL}/summary.json",
        metrics=f"results/pretrain/{MODEL}/metrics.jsonl",
    conda:
        "../../environment.yml"
    log:
        f"results/logs/pretrain/{MODEL}.log",
    threads: workflow.cores
    params:
        spec=as_arg(pretrain_spec(config)),
        out=lambda w, output: os.path.dirname(output.summary),
    shell:
        "OMP_NUM_THREADS={threads} python -m offloadbench.train --spec {params.spec:q} --data {input.data}"
        " --out {params.out} --save-model {output.model} > {log} 2>&1"
