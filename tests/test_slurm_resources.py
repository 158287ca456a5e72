"""What a training job asks the executor for (offloadbench.launch.job_resources), by the config's
`accelerator`: one GPU per rank, or CPUs only. Each case is one that the GPU-only code got wrong on
a CPU cluster (Slurm rejects --gpus and --gres where there are none) or that it must keep."""

from __future__ import annotations

import pytest

from offloadbench.launch import job_resources, omp_threads, rank_threads


def layout(world_size: int = 1, num_nodes: int = 1) -> dict:
    return {"world_size": world_size, "num_nodes": num_nodes}


NOT_GPU = ("gpu", "gres", "tasks_per_gpu", "cpus_per_gpu")


def test_cpu_job_on_one_machine_asks_for_cpus_and_no_gpu():
    res = job_resources(layout(), "none", 8)
    assert {k: res[k] for k in NOT_GPU} == dict.fromkeys(NOT_GPU)
    assert res["nodes"] == 1 and res["cpus_per_task"] == 8
    assert res["tasks"] is None and res["mpi"] is None, "the plugin's own srun -n1 runs it"


def test_cpu_job_with_two_ranks_keeps_every_cpu_for_the_task():
    res = job_resources(layout(2), "none", 8)
    assert res["gpu"] is None and res["cpus_per_task"] == 8 and res["nodes"] == 1
    assert rank_threads(layout(2), res["cpus_per_task"]) == 4


def test_cpu_job_over_two_machines_asks_for_nodes_and_tasks_without_gres():
    res = job_resources(layout(4, 2), "none", 6)
    assert (res["nodes"], res["tasks"], res["mpi"], res["cpus_per_task"]) == (2, 2, "srun", 6)
    assert {k: res[k] for k in NOT_GPU} == dict.fromkeys(NOT_GPU)


def test_gpu_job_on_one_machine_is_as_before():
    assert job_resources(layout(2), "gpu", 16) == {
        "gpu": 2,
        "nodes": 1,
        "gres": None,
        "tasks": None,
        "tasks_per_gpu": None,
        "mpi": None,
        "cpus_per_gpu": 8,
        "cpus_per_task": None,
    }


def test_gpu_job_over_two_machines_asks_for_gres_per_node():
    res = job_resources(layout(8, 2), "gpu", 8)
    assert res["gpu"] is None, "--gpus counts over all nodes; gres is per node"
    assert (res["nodes"], res["gres"], res["tasks"], res["tasks_per_gpu"], res["mpi"]) == (2, "gpu:4", 2, 0, "srun")
    assert res["cpus_per_gpu"] == 2 and res["cpus_per_task"] is None


@pytest.mark.parametrize(("ranks", "cpus", "threads"), [(1, 8, 8), (2, 8, 4), (4, 2, 1), (3, 8, 2)])
def test_each_rank_gets_its_share_of_a_nodes_cpus_and_at_least_one(ranks, cpus, threads):
    assert rank_threads(layout(ranks), cpus) == threads
    assert rank_threads(layout(2 * ranks, 2), cpus) == threads, "ranks per node, not in all"


def test_omp_threads_follow_the_resources_the_job_got():
    """A profile's cpus_per_gpu (GPU clusters) or the job's cpus_per_task (CPU clusters) decides."""
    assert omp_threads(layout(2), "gpu", {"cpus_per_gpu": 8, "cpus_per_task": None}) == 8
    assert omp_threads(layout(2), "none", {"cpus_per_gpu": 8, "cpus_per_task": 2}) == 1
    assert omp_threads(layout(4, 2), "none", {"cpus_per_task": 6}) == 3


def test_an_unknown_accelerator_is_refused():
    with pytest.raises(ValueError, match="gpu, none"):
        job_resources(layout(), "cuda", 2)
