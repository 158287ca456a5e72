# Data preparation (src/offloadbench/data.py): a corpus split into train/validation documents,
# then tokenized into fixed-length blocks with the model's tokenizer. {dataset} is the fine-tuning
# data or, for a scratch model, its pretraining corpus (DATASETS in common.smk).


rule corpus:
    output:
        directory("results/corpus/{dataset}"),
    conda:
        "../../environment.yml"
    log:
        "results/logs/corpus/{dataset}.log",
    params:
        spec=lambda w: as_arg(DATASETS[w.dataset]),
    shell:
        "python -m offloadbench.data corpus --spec {params.spec:q} --out {output} > {log} 2>&1"


rule tokenize:
    input:
        unpack(tokenizer_input),
        corpus="results/corpus/{dataset}",
    output:
        directory("results/data/{dataset}"),
    conda:
        "../../environment.yml"
    log:
        "results/logs/tokenize/{dataset}.log",
    params:
        spec=lambda w: as_arg(DATASETS[w.dataset]),
        tokenizer=tokenizer_arg,
        revision=revision_arg(model_ref(config)["revision"]),
    shell:
        "python -m offloadbench.data tokenize --spec {params.spec:q} --corpus {input.corpus}"
        " --tokenizer {params.tokenizer:q} {params.revision} --out {output} > {log} 2>&1"
