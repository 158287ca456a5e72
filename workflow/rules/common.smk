# Validation of the merged config and the input functions every rule file uses.
import json
import os
import re
import shlex
import sys

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

from offloadbench.config import check_config, expand_runs, schema_errors
from offloadbench.errors import ConfigError
from offloadbench.launch import cuda_visible, job_resources, job_threads, launcher_command, omp_threads
from offloadbench.spec import (
    base_eval_spec,
    datasets,
    declared_runs,
    model_ref,
    models,
    pretrain_spec,
    repeats_of,
    repo_path,
    run_dataset,
    run_spec,
)

# Every violation at once, each with its key path; then Snakemake's own validation of the same
# schema; then the cross-key checks. All of this happens before any job is scheduled.
_errors = schema_errors(config)
if _errors:
    raise WorkflowError("invalid configuration:\n  " + "\n  ".join(_errors))
validate(config, "../schemas/config.schema.yaml")
try:
    config["runs"] = expand_runs(config)["runs"]  # sweep points and seed repeats become runs like any other
    check_config(config)  # also checks the claims file
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}")

SCRATCH = config["model"]["source"] == "scratch"
DATASET = config["dataset"]["name"]
DATASETS = {ds["name"]: ds for ds in datasets(config).values()}
DATASETS.update({ds["name"]: ds for ds in (run_dataset(config, r) for r in config["runs"])})
PRETRAIN_DATASET = config["model"]["pretrain"]["dataset"]["name"] if SCRATCH else None
MODEL = config["model"]["name"]  # the base model; MODELS adds the sweep's sizes (scratch only)
MODELS = models(config)
RUNS = [r["name"] for r in config["runs"]]
CLAIM_RUNS = declared_runs(config)  # a sweep's points are not compared with the base model
SWEEP_RUNS = [r for r in RUNS if r not in CLAIM_RUNS]
SWEEP_FIGURES = ["results/figures/sweep.png", "results/figures/sweep.pdf"] if SWEEP_RUNS else []
CLAIMS = repo_path(config["claims"])
# The shipped reference of this profile (results/reference/<profile>/): an input of the compare
# step where it exists, so that a re-recorded reference is compared again.
REFERENCE = os.path.join(config["reference"]["dir"], config["profile"])


def reference_files(wildcards):
    return [p for p in (f"{REFERENCE}/comparison.csv", f"{REFERENCE}/provenance.json") if os.path.exists(p)]


# The GPU profile and model config whose predicted verdicts claims.md shows beside the measured ones.
_predict = config["prediction"] or {}
PREDICTION = [repo_path(_predict[k]) for k in ("profile", "model_config") if k in _predict]


wildcard_constraints:
    run="|".join(map(re.escape, RUNS)),
    dataset="|".join(map(re.escape, DATASETS)),
    model="|".join(map(re.escape, MODELS)) or "^$",


# Every rule's `python` is the interpreter Snakemake itself runs in (its folder first on PATH), so
# `.venv/bin/snakemake` works without activating the environment; with --sdm conda, each rule's
# own environment's python. The prefix keeps Snakemake's own strict mode for bash.
if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
    shell.prefix(f"set -euo pipefail; export PATH={shlex.quote(os.path.dirname(sys.executable))}:\"$PATH\"; ")


def all_cores():
    """Threads of a job that uses every core: --cores, or 1 where no job runs (--report, --unlock,
    -n without --cores), which Snakemake's workflow.cores refuses."""
    return workflow.resource_settings.cores or 1


def as_arg(obj):
    """A spec as one JSON command-line argument (quoted in the shell command with :q)."""
    return json.dumps(obj, sort_keys=True)


def revision_arg(revision):
    return f"--revision {shlex.quote(revision)}" if revision else ""


def base_model():
    """The folder (scratch) or hub id of the profile's base model."""
    return model_ref(config)["path"]


def base_model_input():
    return [base_model()] if SCRATCH else []


def run_model_config(wildcards):
    """The model folder whose config.json the memory model reads (scratch; hub configs come from
    the cache the training job filled) and the run's DeepSpeed config file, so that editing it
    re-resolves and retrains the run."""
    spec = run_spec(config, wildcards.run)
    inputs = {"model": spec["model"]["path"]} if SCRATCH else {}
    if spec["deepspeed"]:
        inputs["deepspeed"] = spec["deepspeed"]
    return inputs


def memory_inputs(wildcards):
    """Every run's spec and summary for the memory model, in the order of RUNS, and (scratch) the
    model folders whose config.json it reads."""
    inputs = {
        "specs": expand("results/specs/{run}.json", run=RUNS),
        "summaries": expand("results/runs/{run}/summary.json", run=RUNS),
    }
    if SCRATCH:
        inputs["models"] = sorted(set(memory_model_configs()))
    return inputs


def memory_model_configs():
    """Each run's model (folder or hub id), in the order of RUNS: one --model-config per --spec."""
    return [run_spec(config, run)["model"]["path"] for run in RUNS]


def run_inputs(wildcards):
    """A run's tokenized data and, for scratch models, its (pretrained) base model folder."""
    spec = run_spec(config, wildcards.run)
    inputs = {"data": f"results/data/{spec['dataset']}"}
    if SCRATCH:
        inputs["model"] = spec["model"]["path"]
    return inputs


HUB_MODEL = config["model"]["hub"] if config["model"]["source"] == "hub" else None
HUB_DATASETS = [ds["hub"] for ds in datasets(config).values() if ds["source"] == "hub"]


def hub_access_input(wildcards):
    """Jobs that read the hub wait for the access check (hub profiles only)."""
    return ["results/hub/access.json"] if HUB_MODEL or HUB_DATASETS else []


def hub_access_args():
    args = []
    if HUB_MODEL:
        args += ["--model", HUB_MODEL["id"], "--model-revision", HUB_MODEL["revision"]]
    if HUB_DATASETS:  # one fine-tuning dataset per profile; a hub pretraining corpus only with scratch
        args += ["--dataset", HUB_DATASETS[0]["path"], "--dataset-revision", HUB_DATASETS[0]["revision"]]
    return " ".join(shlex.quote(a) for a in args)


def tokenizer_input(wildcards):
    """The locally trained tokenizer (scratch models); a hub model's comes from the hub."""
    return {"tokenizer": f"results/models/{MODEL}-init"} if SCRATCH else {}


def tokenizer_arg(wildcards, input):
    return input.tokenizer if SCRATCH else base_model()


ACCELERATOR = config["accelerator"]  # gpu | none: what the cluster profiles ask for per training job
BASE_EVAL = base_eval_spec(config)  # evaluate_base: one process on one machine, training's defaults


GPU_HERE = cuda_visible()  # a GPU in sight keeps every training job alone (launch.job_threads)


def train_threads(wildcards):
    """CPUs of a run's training job: training.cpu_threads per rank, or every core (job_threads)."""
    return job_threads(run_spec(config, wildcards.run), ACCELERATOR, all_cores(), GPU_HERE)


def eval_threads(wildcards):
    """CPUs of the base model's evaluation: as a run with the defaults of `training`."""
    return job_threads(BASE_EVAL, ACCELERATOR, all_cores(), GPU_HERE)


def train_resource(name):
    """One resource of a run's training job (offloadbench.launch.job_resources: from the run's
    world_size and num_nodes, the config's accelerator and the job's threads)."""
    return lambda wildcards, threads: job_resources(run_spec(config, wildcards.run), ACCELERATOR, threads)[name]


def eval_resource(name):
    """One resource of the base model's evaluation job (one process)."""
    return lambda wildcards, threads: job_resources(BASE_EVAL, ACCELERATOR, threads)[name]


def train_omp_threads(wildcards, resources):
    """Each rank's OMP_NUM_THREADS from the CPUs the job was given (after the profile's resources)."""
    return omp_threads(run_spec(config, wildcards.run), ACCELERATOR, resources)


def eval_omp_threads(wildcards, resources):
    return omp_threads(BASE_EVAL, ACCELERATOR, resources)


def launcher(run):
    """Single process, or torchrun (one process per rank) for DeepSpeed and multi-process runs."""
    return launcher_command(run_spec(config, run))


def all_outputs():
    return [
        f"results/data/{DATASET}",
        *expand("results/runs/{run}/summary.json", run=RUNS),
        "results/eval/base.json",
        *multiext("results/tables/comparison", ".csv", ".md", ".tex"),
        *multiext("results/tables/relative", ".csv", ".md", ".tex"),
        "results/claims.json",
        "results/claims.md",
        "results/tables/numbers.tex",
        "results/compare/reference.json",
        *multiext("results/figures/", "loss_curves.png", "memory.png", "throughput.png"),
        *SWEEP_FIGURES,
    ]
