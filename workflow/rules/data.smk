# Data preparation (src/offloadbench/data.py): the corpus split into train/validation documents,
# then tokenized into fixed-length blocks with the model's tokenizer.


rule corpus:
    output:
        directory(f"results/corpus/{DATASET}"),
    log:
        f"results/logs/corpus/{DATASET}.log",
    params:
        spec=as_arg(config["dataset"]),
    shell:
        "python -m offloadbench.data corpus --spec {params.spec:q} --out {output} > {log} 2>&1"


rule tokenize:
    input:
        corpus=rules.corpus.output[0],
        tokenizer=[tokenizer_source()] if SCRATCH else [],
    output:
        directory(f"results/data/{DATASET}"),
    log:
        f"results/logs/tokenize/{DATASET}.log",
    params:
        spec=as_arg(config["dataset"]),
        tokenizer=tokenizer_source(),
        revision=revision_arg(model_ref(config)["revision"]),
    shell:
        "python -m offloadbench.data tokenize --spec {params.spec:q} --corpus {input.corpus}"
        " --tokenizer {params.tokenizer:q} {params.revision} --out {output} > {log} 2>&1"
