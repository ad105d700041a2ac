"""Shipped target profiles and the YAML loader: real gate facts, every fact sourced, strict errors."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from kerascompress.errors import ConfigError
from kerascompress.targets import Kernel, Target, list_profiles, load, resolve, to_yaml
from kerascompress.targets.profiles import targets_dir

SHIPPED = {
    "x86-avx2", "x86-avx512-vnni", "arm64-cortex-a72", "arm64-fp16", "edgetpu", "cortex-m7",
    "nvidia-pascal-sm61", "nvidia-t4-sm75", "nvidia-a100-sm80", "nvidia-jetson-orin-sm87",
    "nvidia-l4-sm89", "nvidia-h100-sm90",
}


def test_all_required_profiles_ship():
    assert SHIPPED <= set(list_profiles())


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_profile_loads_and_every_fact_has_a_source(name):
    t = load(name)
    assert t.name == name  # file stem and name agree
    raw = yaml.safe_load((targets_dir() / f"{name}.yaml").read_text())
    facts = [k for k in raw if k not in ("name", "description", "precisions")]
    facts += [f"precisions.{p}" for p in raw["precisions"]]
    for fact in facts:
        assert t.source(fact).strip(), f"{name}: {fact} has no source"
    # the gate's core questions all have a sourced answer
    for p in ("fp32", "fp16", "int8"):
        assert p in t.precisions and t.source(f"precisions.{p}")
    assert t.channel_multiple >= 1


def test_x86_cpus():
    for name, cm in (("x86-avx2", 8), ("x86-avx512-vnni", 16)):
        t = load(name)
        assert (t.runtime, t.device, t.arch) == ("litert", "cpu", "x86_64")
        assert t.kernel("fp16") is Kernel.STORAGE and t.kernel("int8") is Kernel.FAST
        assert t.kernel("int16x8") is Kernel.STORAGE
        assert not t.supports("sparse_2_4") and not t.supports("clustered_weights")
        assert t.supports("float_fallback") and t.channel_multiple == cm
    assert "avx512_vnni" in load("x86-avx512-vnni").isa_features
    assert "avx512_vnni" not in load("x86-avx2").isa_features


def test_arm_fp16_needs_armv82():
    a72, a76 = load("arm64-cortex-a72"), load("arm64-fp16")
    assert a72.arch == a76.arch == "arm64"
    assert a72.kernel("fp16") is Kernel.STORAGE and a76.supports("fp16")
    assert a72.supports("int8") and a76.supports("int8")
    assert "asimdhp" in a76.isa_features and "asimdhp" not in a72.isa_features
    assert (a72.channel_multiple, a76.channel_multiple) == (4, 8)


def test_edgetpu_is_int8_only_without_float_fallback():
    t = load("edgetpu")
    assert t.full_integer_only and not t.supports("float_fallback")
    assert t.supports("int8")
    for p in ("fp32", "fp16", "int16x8", "bf16"):
        assert t.kernel(p) is Kernel.NONE
    assert t.device == "npu" and not t.runs_here()


def test_mcu_has_budgets_and_integer_only():
    t = load("cortex-m7")
    assert t.device == "mcu" and t.full_integer_only and not t.supports("float_fallback")
    assert t.flash_bytes == 1024 * 1024 and t.ram_bytes == 320 * 1024
    assert "DS10916" in t.source("flash_bytes")
    assert t.supports("int8") and t.kernel("fp32") is Kernel.NONE
    assert not t.runs_here()


@pytest.mark.parametrize(
    "name, cc, fp16, bf16, fp8, sparse",
    [
        ("nvidia-pascal-sm61", 6.1, Kernel.STORAGE, False, False, False),
        ("nvidia-t4-sm75", 7.5, Kernel.FAST, False, False, False),
        ("nvidia-a100-sm80", 8.0, Kernel.FAST, True, False, True),
        ("nvidia-jetson-orin-sm87", 8.7, Kernel.FAST, True, False, True),
        ("nvidia-l4-sm89", 8.9, Kernel.FAST, True, True, True),
        ("nvidia-h100-sm90", 9.0, Kernel.FAST, True, True, True),
    ],
)
def test_nvidia_gates(name, cc, fp16, bf16, fp8, sparse):
    t = load(name)
    assert (t.runtime, t.device) == ("tensorrt", "gpu") and not t.runs_here()
    assert t.compute_capability == pytest.approx(cc)
    assert t.kernel("fp16") is fp16
    assert t.supports("int8")  # dp4a from 6.1, tensor cores from 7.5
    assert t.supports("bf16") is bf16 and t.supports("fp8") is fp8
    assert t.supports("sparse_2_4") is sparse
    assert t.kernel("int16x8") is Kernel.NONE
    assert t.supports("float_fallback")


def test_gpu_channel_multiples_and_tensorrt_versions():
    assert load("nvidia-pascal-sm61").channel_multiple == 4
    assert all(load(n).channel_multiple == 16 for n in ("nvidia-t4-sm75", "nvidia-a100-sm80", "nvidia-h100-sm90"))
    pascal = load("nvidia-pascal-sm61")
    assert pascal.runtime_version == "<8.7"
    assert any("sm_61" in n for n in pascal.notes)
    assert "SM 7.0 or higher" in pascal.source("runtime_version")
    assert load("nvidia-jetson-orin-sm87").runtime_version == ">=10.3,<11"  # JetPack 6: TensorRT 10.x
    assert load("nvidia-t4-sm75").runtime_version == ""


def test_a_runtime_version_that_is_no_version_specifier_is_refused():
    from kerascompress.targets.profiles import from_dict

    data = yaml.safe_load((targets_dir() / "nvidia-pascal-sm61.yaml").read_text())
    data["runtime_version"]["value"] = "TensorRT 8.6 or older"
    with pytest.raises(ConfigError, match="field 'runtime_version': value 'TensorRT 8.6 or older' is not a PEP 440"):
        from_dict(data, origin="my.yaml")


def test_unknown_name_lists_known_names():
    with pytest.raises(ConfigError) as e:
        load("nvidia-a100")
    msg = str(e.value)
    assert "nvidia-a100-sm80" in msg and "x86-avx2" in msg and "auto" in msg


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.yaml")


def test_resolve_accepts_all_forms(tmp_path):
    t4 = load("nvidia-t4-sm75")
    assert resolve(t4) is t4
    assert resolve("nvidia-t4-sm75") == t4
    path = tmp_path / "mine.yaml"
    path.write_text((targets_dir() / "nvidia-t4-sm75.yaml").read_text())
    assert resolve(str(path)) == t4 and resolve(path) == t4
    auto = resolve("auto")
    assert auto.runtime in ("litert", "tensorrt") and auto.name.startswith("host-")
    with pytest.raises(ConfigError, match="not int"):
        resolve(3)


# --- malformed profiles: the error names the file and the field ----------------------------

def _good() -> dict:
    return yaml.safe_load((targets_dir() / "x86-avx2.yaml").read_text())


def _write(tmp_path: Path, data) -> Path:
    p = tmp_path / "custom.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def test_user_profile_loads_like_a_shipped_one(tmp_path):
    data = _good()
    data["name"] = "my-box"
    data["channel_multiple"] = {"value": 32, "source": "measured on my box"}
    t = load(_write(tmp_path, data))
    assert t.name == "my-box" and t.channel_multiple == 32 and t.source("channel_multiple") == "measured on my box"


def _broken(mutate):
    data = _good()
    mutate(data)
    return data


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.pop("runtime"), "runtime"),
        (lambda d: d.pop("name"), "name"),
        (lambda d: d.pop("precisions"), "precisions"),
        (lambda d: d["precisions"].update(fp12={"kernel": "fast", "source": "x"}), "precisions.fp12"),
        (lambda d: d["precisions"]["int8"].update(kernel="fastest"), "precisions.int8.kernel"),
        (lambda d: d["precisions"]["int8"].pop("source"), "precisions.int8.source"),
        (lambda d: d["channel_multiple"].pop("source"), "channel_multiple"),
        (lambda d: d["channel_multiple"].update(source="  "), "channel_multiple"),
        (lambda d: d["channel_multiple"].update(value=0), "channel_multiple"),
        (lambda d: d["sparse_2_4"].update(value="yes"), "sparse_2_4"),
        (lambda d: d["runtime"].update(value="onnxruntime"), "runtime"),
        (lambda d: d.update(channel_multple={"value": 8, "source": "typo"}), "channel_multple"),
        (lambda d: d.update(device="cpu"), "device"),  # bare value without {value, source}
    ],
)
def test_malformed_profile_names_file_and_field(tmp_path, mutate, field):
    path = _write(tmp_path, _broken(mutate))
    with pytest.raises(ConfigError) as e:
        load(path)
    msg = str(e.value)
    assert str(path) in msg and repr(field) in msg, msg


def test_gpu_profile_without_compute_capability_is_refused(tmp_path):
    data = yaml.safe_load((targets_dir() / "nvidia-t4-sm75.yaml").read_text())
    del data["compute_capability"]
    with pytest.raises(ConfigError, match="'compute_capability'"):
        load(_write(tmp_path, data))


def test_not_yaml_or_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(_write(tmp_path, "name: [unclosed"))
    with pytest.raises(ConfigError, match="mapping"):
        load(_write(tmp_path, "- a\n- b\n"))


@pytest.mark.parametrize("name", ["nvidia-pascal-sm61", "cortex-m7", "arm64-fp16"])
def test_to_yaml_round_trips(tmp_path, name):
    t = load(name)
    assert load(_write(tmp_path, to_yaml(t))) == t


def test_to_yaml_of_detected_host_loads(tmp_path):
    t = resolve("auto")
    back = load(_write(tmp_path, to_yaml(t)))
    assert back.precisions == t.precisions and back.isa_features == t.isa_features
    assert isinstance(back, Target)


# ----------------------------------------------------------------------------- checkable sources

REPO = Path(__file__).resolve().parents[2]
_URL = re.compile(r"https?://[^\s()'\"<>]+")
_FILE = re.compile(r"(?<![\w/.:-])((?:[\w.-]+/)*[\w-]+\.(?:md|json|txt|py|ya?ml|csv|cc|cpp|h|hpp|rst|td|pdf|ipynb))\b")
_MEASURED = re.compile(r"(?<!not )\bmeasured\b", re.IGNORECASE)


def citation_problems(source: str) -> list[str]:
    """What keeps a user from checking ``source``: no public URL or results file, a malformed URL,
    a file that is not in this repository, a 'measured' claim without the results file (naming its machine)."""
    problems = []
    urls = [u.rstrip(".,;:") for u in _URL.findall(source)]
    files = _FILE.findall(_URL.sub(" ", source))
    for url in urls:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or "." not in parsed.netloc or not re.fullmatch(r"[\w.-]+", parsed.netloc):
            problems.append(f"not a URL: {url}")
    for name in files:
        if not (REPO / name).is_file():
            problems.append(f"names a file that is not in the repository: {name}")
    results = [f for f in files if f.startswith("benchmarks/results/") and (REPO / f).is_file()]
    if not urls and not results:
        problems.append("cites no public document (URL) and no results file of this repository")
    if _MEASURED.search(source):
        if not results:
            problems.append("a 'measured' claim that names no benchmarks/results file")
        for f in results:
            if "Machine:" not in (REPO / f).read_text():
                problems.append(f"{f} does not name the machine it was measured on")
    return problems


def _facts(raw: dict) -> dict[str, str]:
    facts = {k: v.get("source", "") for k, v in raw.items() if k not in ("name", "description", "precisions")}
    facts.update({f"precisions.{p}": v.get("source", "") for p, v in raw["precisions"].items()})
    return facts


@pytest.mark.parametrize("name", list_profiles())
def test_every_fact_cites_something_a_user_can_check(name):
    raw = yaml.safe_load((targets_dir() / f"{name}.yaml").read_text())
    problems = {fact: citation_problems(src) for fact, src in _facts(raw).items()}
    assert {f: p for f, p in problems.items() if p} == {}


def test_the_citation_check_catches_what_it_must():
    assert citation_problems("measured: int8 ~3x faster (FINDINGS.md)") == [
        "names a file that is not in the repository: FINDINGS.md",
        "cites no public document (URL) and no results file of this repository",
        "a 'measured' claim that names no benchmarks/results file",
    ]
    assert citation_problems("see ARCHITECTURE.md and https://example.com/x") == [
        "names a file that is not in the repository: ARCHITECTURE.md"]
    assert citation_problems("a datasheet, page 12") == ["cites no public document (URL) and no results file of this repository"]
    assert citation_problems("https://docs/x") == ["not a URL: https://docs/x"]
    assert citation_problems("measured (benchmarks/results/litert_kernels.md)") == []
    assert citation_problems("not measured on Arm; XNNPACK README (https://github.com/google/XNNPACK)") == []


def test_host_detection_rules_cite_checkable_sources_too():
    from kerascompress.targets.detect import cpu_target, gpu_target, parse_cpuinfo

    hosts = [
        parse_cpuinfo("processor\t: 0\nflags\t\t: fpu sse4_1 avx fma f16c avx2 avx512f avx512_vnni\n"),
        parse_cpuinfo("processor\t: 0\nflags\t\t: fpu sse4_1 avx fma f16c avx2\n"),
        parse_cpuinfo("processor\t: 0\nflags\t\t: fpu sse4_1\n"),
        parse_cpuinfo("processor\t: 0\nFeatures\t: fp asimd fphp asimdhp asimddp i8mm\nCPU architecture: 8\n"),
        parse_cpuinfo("processor\t: 0\nFeatures\t: fp asimd\nCPU architecture: 8\n"),
    ]
    targets = [cpu_target(h) for h in hosts] + [gpu_target("g", cc) for cc in ((6, 1), (7, 0), (7, 5), (8, 0), (8, 9))]
    for t in targets:
        problems = {fact: citation_problems(src) for fact, src in t.sources.items()}
        assert {f: p for f, p in problems.items() if p} == {}, t.name


def test_no_file_in_the_repository_cites_an_unpublished_note():
    """docs, results, code and profiles cite public documents or this repository's files only."""
    offenders = []
    for folder in ("docs", "benchmarks", "kerascompress", "configs", "README.md"):
        for path in ([REPO / folder] if (REPO / folder).is_file() else (REPO / folder).rglob("*")):
            if path.suffix in (".md", ".py", ".yaml", ".json") and path.is_file():
                text = path.read_text(errors="replace")
                offenders += [f"{path.relative_to(REPO)}: {m}" for m in re.findall(r"\b(?:FINDINGS|ARCHITECTURE)\.md", text)]
    assert offenders == []
