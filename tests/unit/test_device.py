from components.core.device import container_cpu_limit


def test_a_container_cpu_limit_is_read_from_cgroup_v2(tmp_path):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("400000 100000\n")  # a Kubernetes limit of 4 CPUs
    assert container_cpu_limit(cpu_max) == 4
    cpu_max.write_text("50000 100000\n")  # 500m: still one thread
    assert container_cpu_limit(cpu_max) == 1
    cpu_max.write_text("max 100000\n")  # no limit
    assert container_cpu_limit(cpu_max) is None
    assert container_cpu_limit(tmp_path / "absent") is None  # cgroup v1 or not Linux
