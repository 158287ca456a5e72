# One training job per run in config `runs` (src/offloadbench/train.py). Method and offload are
# configuration; DeepSpeed and multi-process runs are launched through torchrun.
# Each job takes every core: timings of jobs that share a machine would not be comparable.
# Besides the declared outputs a run folder holds model/ (the final checkpoint or LoRA adapter) and,
# while a run is unfinished, checkpoints/ (resume points: a rerun after a kill continues there).
# A run that fails while training still ends the job successfully, with status failed or oom in
# its summary, so the tables show it and the rest of the workflow goes on.


rule train:
    input:
        data=f"results/data/{DATASET}",
        model=base_model_input(),
    output:
        summary="results/runs/{run}/summary.json",
        metrics="results/runs/{run}/metrics.jsonl",
    conda:
        "../../environment.yml"
    log:
        "results/logs/train/{run}.log",
    threads: workflow.cores
    params:
        spec=lambda w: as_arg(run_spec(config, w.run)),
        launcher=lambda w: launcher(w.run),
        threads_per_rank=lambda w, threads: max(1, threads // run_spec(config, w.run)["world_size"]),
        out=lambda w, output: os.path.dirname(output.summary),
    shell:
        "OMP_NUM_THREADS={params.threads_per_rank} {params.launcher} -m offloadbench.train"
        " --spec {params.spec:q} --data {input.data} --out {params.out} > {log} 2>&1"


rule evaluate_base:
    input:
        data=f"results/data/{DATASET}",
        model=base_model_input(),
    output:
        "results/eval/base.json",
    log:
        "results/logs/evaluate_base/base.log",
    conda:
        "../../environment.yml"
    threads: workflow.cores
    params:
        spec=as_arg(base_eval_spec(config)),
    shell:
        "OMP_NUM_THREADS={threads} python -m offloadbench.train --eval-only --spec {params.spec:q}"
        " --data {input.data} --out {output} > {log} 2>&1"
