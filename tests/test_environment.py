from greencompress.core.hardware import cpu_info


def test_cpu_flags_and_vnni_are_parsed_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz\n"
        "flags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_vnni\n\n"
        "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz\nflags\t\t: fpu\n"
    )
    info = cpu_info.__wrapped__(cpuinfo)
    assert info.model == "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"
    assert info.flags == ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni")
    assert info.has_vnni


def test_cpu_without_vnni(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: AMD EPYC\nflags\t\t: fpu avx avx2 fma\n")
    info = cpu_info.__wrapped__(cpuinfo)
    assert info.flags == ("avx2", "fma") and not info.has_vnni


def test_topology_from_a_fake_sysfs_tree(tmp_path):
    from greencompress.core.hardware import cpu_topology

    cpu = tmp_path / "cpu"
    (cpu / "smt").mkdir(parents=True)
    (cpu / "smt" / "active").write_text("1\n")
    import os

    first = min(os.sched_getaffinity(0))
    (cpu / f"cpu{first}" / "topology").mkdir(parents=True)
    (cpu / f"cpu{first}" / "topology" / "thread_siblings_list").write_text(f"{first},{first + 32}\n")
    (cpu / f"cpu{first}" / "cpufreq").mkdir()
    (cpu / f"cpu{first}" / "cpufreq" / "scaling_governor").write_text("performance\n")
    (cpu / f"cpu{first}" / "cpufreq" / "scaling_cur_freq").write_text("2450000\n")
    topology = cpu_topology(cpu)
    assert topology.threads_per_core == 2 and topology.smt_active is True
    assert topology.governor == "performance" and topology.frequency_mhz == 2450.0
    assert topology.allowed_cpus == tuple(sorted(os.sched_getaffinity(0)))
    (cpu / f"cpu{first}" / "topology" / "thread_siblings_list").write_text(f"{first}-{first}\n")
    (cpu / "smt" / "active").write_text("0\n")
    assert cpu_topology(cpu).threads_per_core == 1 and cpu_topology(cpu).smt_active is False
    bare = cpu_topology(tmp_path / "nothing")  # a VM that hides it all
    assert (bare.threads_per_core, bare.smt_active, bare.governor, bare.frequency_mhz) == (None, None, None, None)


def test_the_estimate_says_how_its_watts_meet_hyperthreads():
    from greencompress.measure.energy.estimate import EstimateMeter

    assumptions = " ".join(EstimateMeter(7.0, threads_per_core=2).describe().assumptions)
    assert "SMT is on (2 threads per core)" in assumptions and "up to 2x too much" in assumptions
    assert "a CPU-second is a core-second" in " ".join(EstimateMeter(7.0, threads_per_core=1).describe().assumptions)


def test_the_environment_lists_usable_runtimes_apart_from_registered_but_unavailable_ones(monkeypatch):
    from greencompress.measure.environment import runtime_versions, unavailable_runtimes
    from greencompress.report.markdown import units_and_runtimes
    from greencompress.runtimes import RUNTIMES, RuntimeSpec

    ghost = RuntimeSpec("ghost-gpu", "onnx", lambda path, settings: None, check=lambda: "no GPU here")
    monkeypatch.setitem(RUNTIMES._entries, ghost.name, ghost)
    usable, unavailable = runtime_versions(), unavailable_runtimes()
    assert "ghost-gpu" not in usable and unavailable["ghost-gpu"] == "no GPU here"
    assert set(usable) | set(unavailable) == set(RUNTIMES.names())
    assert usable["onnxruntime"] == __import__("onnxruntime").__version__
    line = units_and_runtimes(
        {
            "cpu": {"model": "Test CPU", "matrix_units": {"avx2": True}},
            "runtimes": usable,
            "runtimes_unavailable": unavailable,
        }
    )
    usable_part, _, unavailable_part = line.partition("Registered but unavailable here:")
    assert "ghost-gpu" not in usable_part and "ghost-gpu (no GPU here)" in unavailable_part
    assert f"onnxruntime {usable['onnxruntime']}" in usable_part
