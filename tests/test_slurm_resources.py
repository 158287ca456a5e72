"""What a training job asks the executor for (offloadbench.launch.job_resources), by the config's
`accelerator`: one GPU per rank, or CPUs only. Each case is one that the GPU-only code got wrong on
a CPU cluster (Slurm rejects --gpus and --gres where there are none) or that it must keep."""

from __future__ import annotations

import pytest

from offloadbench.launch import cuda_visible, job_resources, job_threads, omp_threads, rank_threads


def layout(world_size: int = 1, num_nodes: int = 1, cpu_threads: int | None = None) -> dict:
    return {"world_size": world_size, "num_nodes": num_nodes, "training": {"cpu_threads": cpu_threads}}


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


@pytest.mark.parametrize(
    ("spec", "accelerator", "gpu_here", "threads"),
    [
        (layout(cpu_threads=1), "none", False, 1),  # side by side, one core each
        (layout(2, cpu_threads=1), "none", False, 2),  # per rank: two ranks, one core each
        (layout(4, 2, cpu_threads=1), "none", False, 2),  # ranks per node, not in all
        (layout(cpu_threads=3), "none", False, 3),
        (layout(cpu_threads=16), "none", False, 8),  # never more than --cores
        (layout(), "none", False, 8),  # cpu_threads null: every core, the job runs alone
        (layout(cpu_threads=1), "gpu", False, 8),  # GPU jobs: cpus_per_gpu shares out every core
        (layout(cpu_threads=1), "none", True, 8),  # a GPU in sight: jobs side by side would share it
    ],
)
def test_job_threads_follow_cpu_threads_only_where_jobs_train_on_the_cpu(spec, accelerator, gpu_here, threads):
    assert job_threads(spec, accelerator, 8, gpu_here) == threads


def test_a_job_with_fewer_threads_asks_a_cpu_cluster_for_them():
    spec = layout(cpu_threads=1)
    threads = job_threads(spec, "none", 8, False)
    res = job_resources(spec, "none", threads)
    assert res["cpus_per_task"] == 1 and omp_threads(spec, "none", res) == 1


def test_a_gpu_is_in_sight_only_where_a_device_node_is_and_cuda_sees_it(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    (tmp_path / "nvidiactl").touch()  # the driver's control node: there even with no GPU given
    (tmp_path / "nvidia-uvm").touch()
    assert not cuda_visible(str(tmp_path))
    (tmp_path / "nvidia0").touch()
    assert cuda_visible(str(tmp_path))
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert not cuda_visible(str(tmp_path)), hidden
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert cuda_visible(str(tmp_path))
