# Data preparation (src/offloadbench/data.py): a corpus split into train/validation documents,
# then tokenized into fixed-length blocks with the model's tokenizer. {dataset} is the fine-tuning
# data or, for a scratch model, its pretraining corpus (DATASETS in common.smk).


rule corpus:
    input:
        hub_access_input,
    output:
        directory("results/corpus/{dataset}"),
    conda:
        "../envs/offloadbench.yaml"
    benchmark:
        "results/benchmarks/corpus/{dataset}.tsv",
    log:
        "results/logs/corpus/{dataset}.log",
    params:
        spec=lambda w: as_arg(DATASETS[w.dataset]),
    shell:
        "python -m offloadbench.data corpus --spec {params.spec:q} --out {output} > {log} 2>&1"


rule tokenize:
    input:
        unpack(tokenizer_input),
        hub_access_input,
        corpus="results/corpus/{dataset}",
    output:
        directory("results/data/{dataset}"),
    conda:
        "../envs/offloadbench.yaml"
    benchmark:
        "results/benchmarks/tokenize/{dataset}.tsv",
    log:
        "results/logs/tokenize/{dataset}.log",
    params:
        spec=lambda w: as_arg(DATASETS[w.dataset]),
        tokenizer=tokenizer_arg,
        revision=revision_arg(model_ref(config)["revision"]),
    shell:
        "python -m offloadbench.data tokenize --spec {params.spec:q} --corpus {input.corpus}"
        " --tokenizer {params.tokenizer:q} {params.revision} --out {output} > {log} 2>&1"


# A hub profile's first job: can the pinned model and dataset be had (token, license, network or
# offline cache)? It fails in a second with a message naming the repository and HF_TOKEN, instead of
# failing inside tokenization or after a long download (src/offloadbench/hub.py).
rule hub_access:
    output:
        "results/hub/access.json",
    conda:
        "../envs/offloadbench.yaml"
    benchmark:
        "results/benchmarks/hub_access/access.tsv",
    log:
        "results/logs/hub_access/access.log",
    params:
        args=hub_access_args(),
    shell:
        "python -m offloadbench.hub {params.args} --out {output} > {log} 2>&1"
