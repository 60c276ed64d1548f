"""``pom-infer doctor``: what runs the models here, in a few plain lines (or JSON)."""

from __future__ import annotations

from .gpu import DRIVER_LIBRARY, MIN_DRIVER, CudaReport


def report_lines(report: CudaReport, gpus: list[int] | None) -> list[str]:
    """The human-readable report; the last line is the verdict for ``gpus`` (None: the CPU)."""
    short = ", ".join(p.replace("ExecutionProvider", "") for p in report.providers)
    build = f"built for CUDA {report.cuda_build}" if report.cuda_build else "no CUDA build"
    lines = [f"ONNX Runtime {report.onnxruntime} ({report.package}), {build}; providers: {short}"]
    if report.libraries:
        lines.append("Libraries the CUDA provider needs (after loading the pip-installed ones):")
        width = max(len(lib.name) for lib in report.libraries)
        for lib in report.libraries:
            if lib.ok:
                lines.append(f"  ok       {lib.name:<{width}}  {lib.path}")
            else:
                lines.append(f"  MISSING  {lib.name:<{width}}  provided by {lib.package}")
    if report.cuda_build:
        needed = f"CUDA {report.cuda_build} needs driver {MIN_DRIVER.get(report.cuda_build, 580)} or newer"
        if report.driver_cuda is None:
            lines.append(f"NVIDIA driver: not found ({DRIVER_LIBRARY}); {needed}")
        else:
            lines.append(f"NVIDIA driver: supports CUDA up to {report.driver_cuda[0]}.{report.driver_cuda[1]}; {needed}")
        if report.gpus:
            lines.append("GPUs:")
            for g in report.gpus:
                free = f", {g.free_mib} MiB free" if g.free_mib is not None else ""
                lines.append(f"  {g.index}: {g.name}, {g.total_mib} MiB{free}")
        elif report.driver_cuda is not None:
            lines.append("GPUs: none visible")
    if gpus is None:
        lines.append("The CPU runs the models (asked for with --gpus cpu).")
        return lines
    for problem in report.problems:
        lines.append(f"Problem: {problem}")
    if report.ok:
        lines.append(f"CUDA is ready for GPU {','.join(map(str, gpus)) if gpus else 'any'}.")
    else:
        lines.append("CUDA cannot run here. Fix the problems above, or run on the CPU with --gpus cpu.")
    return lines
