from greencompress.environment import cpu_info


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
