# One training job per run in config `runs` (src/offloadbench/train.py). Method and offload are
# configuration; DeepSpeed and multi-process runs are launched through torchrun, and runs over
# several machines through srun + torchrun (src/offloadbench/launch.py).
# A job takes training.cpu_threads per rank where jobs train on the CPU, else every core
# (launch.job_threads): the default profile's small runs train side by side, one core each (what a
# neighbour costs them is inside the noise: benchmarks/side_by_side.py); the runs C4 times take
# every core, alone.
# Besides the declared outputs a run folder holds model/ (the final checkpoint or LoRA adapter) and,
# while a run is unfinished, checkpoints/ (resume points: a rerun after a kill continues there).
# A run that fails while training still ends the job successfully, with status failed or oom in
# its summary, so the tables show it and the rest of the workflow goes on.
#
# Resources come from the run (world_size, num_nodes) and the config's `accelerator` (gpu | none),
# so executors place each job right; the profiles in workflow/profiles/ add what depends on the
# cluster (memory, time, CPUs per GPU):
#   gpu           GPUs of a one-machine job (accelerator gpu; Slurm --gpus, Kubernetes
#                 nvidia.com/gpu). Locally it only limits anything when given: `--resources gpu=<GPUs>`.
#   nodes         machines (Slurm --nodes); a one-machine job says 1 so Slurm never splits it.
#   gres, tasks, tasks_per_gpu, mpi
#                 runs over several machines: gpu:<per node> on each node (Slurm --gres; gpu only),
#                 one task per node (--ntasks), no --ntasks-per-gpu, and mpi marks the job as one
#                 whose shell command starts its own srun (launch.py), so the executor does not wrap
#                 it in one.
#   cpus_per_gpu  accelerator gpu: threads of each rank (Slurm --cpus-per-gpu). Locally: every core
#                 shared out over the ranks of the job; a profile may set it.
#   cpus_per_task accelerator none: the job's threads on each node (Slurm --cpus-per-task; the
#                 job's `threads`, i.e. --cores), shared out over the ranks of a node.
# Each rank's OMP_NUM_THREADS follows the CPUs the job got (params.omp_threads).
# (offloadbench.launch.job_resources and omp_threads derive them; common.smk reads the config.)


# Everything a run needs that depends on the model's shape (the DeepSpeed config with its "auto"
# values filled, the NVMe swap folder, the disk it needs), resolved before it trains
# (src/offloadbench/resolve.py); the training job reads results/specs/<run>.json as it is.
rule resolve:
    input:
        unpack(run_model_config),
        hub_access_input,
    output:
        "results/specs/{run}.json",
    conda:
        "../envs/offloadbench.yaml"
    benchmark:
        "results/benchmarks/resolve/{run}.tsv",
    log:
        "results/logs/resolve/{run}.log",
    params:
        spec=lambda w: as_arg(run_spec(config, w.run)),
        model=lambda w, input: input.get("model", model_ref(config)["path"]),
        revision=revision_arg(model_ref(config)["revision"]),
    shell:
        "python -m offloadbench.resolve --spec {params.spec:q} --model-config {params.model:q} {params.revision}"
        " --out {output} > {log} 2>&1"


rule train:
    input:
        unpack(run_inputs),
        spec="results/specs/{run}.json",
    output:
        summary="results/runs/{run}/summary.json",
        metrics="results/runs/{run}/metrics.jsonl",
    conda:
        "../envs/offloadbench.yaml"
    benchmark:
        "results/benchmarks/train/{run}.tsv",
    log:
        "results/logs/train/{run}.log",
    threads: train_threads
    resources:
        gpu=train_resource("gpu"),
        nodes=train_resource("nodes"),
        gres=train_resource("gres"),
        tasks=train_resource("tasks"),
        tasks_per_gpu=train_resource("tasks_per_gpu"),
        mpi=train_resource("mpi"),
        cpus_per_gpu=train_resource("cpus_per_gpu"),
        cpus_per_task=train_resource("cpus_per_task"),
    params:
        launcher=lambda w: launcher(w.run),
        out=lambda w, output: os.path.dirname(output.summary),
        omp_threads=train_omp_threads,
    shell:
        "OMP_NUM_THREADS={params.omp_threads} OFFLOADBENCH_WATCH_PID=$PPID {params.launcher} -m offloadbench.train"
        " --spec {input.spec} --data {input.data} --out {params.out} > {log} 2>&1"


rule evaluate_base:
    input:
        data=f"results/data/{DATASET}",
        model=base_model_input(),
    output:
        "results/eval/base.json",
    conda:
        "../envs/offloadbench.yaml"
    benchmark:
        "results/benchmarks/evaluate_base/base.tsv",
    log:
        "results/logs/evaluate_base/base.log",
    threads: eval_threads
    resources:
        gpu=eval_resource("gpu"),
        nodes=eval_resource("nodes"),
        cpus_per_gpu=eval_resource("cpus_per_gpu"),
        cpus_per_task=eval_resource("cpus_per_task"),
    params:
        spec=as_arg(BASE_EVAL),
        omp_threads=eval_omp_threads,
    shell:
        "OMP_NUM_THREADS={params.omp_threads} python -m offloadbench.train --eval-only --spec {params.spec:q}"
        " --data {input.data} --out {output} > {log} 2>&1"
