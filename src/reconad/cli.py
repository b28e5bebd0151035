"""The ``reconad`` command: a thin shell over the Python API.

Every user error is printed as one line ``error: ...`` on stderr with exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from reconad.errors import ReconadError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Anomaly detection in images by autoencoder reconstruction error.",
)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value: section.key=value (repeatable)."),
]
DeviceOption = Annotated[
    str | None, typer.Option("--device", help="Where to run: auto (cuda, else mps, else cpu), "
                                              "cpu, cuda or mps.")
]
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Folder holding the dataset files.")
]


@app.command("run")
def run_command(
    source: Annotated[str, typer.Argument(help="A preset name (see `reconad presets`) or a "
                                               "YAML config file.")],
    overrides: SetOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run directory to create "
                                             "(default runs/NAME-TIMESTAMP).")] = None,
    data_dir: DataDirOption = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue a killed run of --out from its last "
                                              "finished epoch (same config).")] = False,
    device: DeviceOption = None,
) -> None:
    """Train, score, threshold and evaluate; write a run directory and print a summary."""
    from reconad.config import load_config
    from reconad.pipeline import run
    from reconad.report import print_summary

    items = list(overrides or [])
    if data_dir is not None:
        items.append(f"data.data_dir={data_dir}")
    if device is not None:
        items.append(f"train.device={device}")
    config = load_config(source, items)
    if resume and out is None:
        raise ReconadError("--resume needs --out: the run directory to continue")
    from reconad.device import resolve_device

    resolve_device(config.train.device)  # an unavailable device fails now, not after loading
    result = run(config, out, progress=not quiet, overwrite=overwrite, resume=resume)
    print_summary(result.metrics)
    typer.echo(f"run written to {result.run_dir}")


@app.command("score")
def score_command(
    detector: Annotated[Path, typer.Argument(
        help="A detector.safetensors file (or, with --engine onnx, a .onnx file written by "
             "reconad export).")],
    input: Annotated[str, typer.Argument(help="Images: a folder (class sub-folders give "
                                              "labels), .npy (memory-mapped), .npz, .parquet "
                                              "(encoded images), CSV, IDX, one image, or "
                                              "mnist/fashion-mnist/kmnist (test images).")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="CSV to write (default: stdout); with --engine ray a .csv file or a "
                      "folder for Parquet shards plus scores.csv.")] = None,
    resize: Annotated[tuple[int, int] | None, typer.Option(help="Resize images to H W.")] = None,
    grayscale: Annotated[bool, typer.Option(help="Convert RGB images to grey.")] = False,
    label_column: Annotated[str, typer.Option(help="Label column of a CSV input.")] = "label",
    gallery: Annotated[Path | None, typer.Option(help="Also write a PNG of the top-k "
                                                 "outliers and the k most normal images.")]
    = None,
    gallery_k: Annotated[int, typer.Option(min=1, help="Images per row block of --gallery.")]
    = 16,
    maps: Annotated[Path | None, typer.Option(help="Also write each image's anomaly map as a "
                                              "heat-map PNG named after its id into this "
                                              "folder.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images decoded and scored at once "
                                                        "(bounds the memory).")] = 256,
    workers: Annotated[int | None, typer.Option(
        min=0, help="Processes decoding image files (Ray: scoring actors); default: the CPU "
                    "count, at most 4.")] = None,
    skip_bad: Annotated[bool, typer.Option(
        help="Skip unreadable or mis-sized image files, naming each on stderr, instead of "
             "stopping at the first.")] = False,
    engine: Annotated[str, typer.Option(
        help="local (this machine), onnx (this machine, through onnxruntime; pip install "
             "\"reconad[onnx]\") or ray (a Ray cluster; pip install \"reconad[ray]\").")
    ] = "local",
    address: Annotated[str | None, typer.Option(
        help="Ray cluster to join (ray.init address, e.g. auto or ray://host:10001); default: "
             "start a local Ray.")] = None,
    data_dir: DataDirOption = None,
    device: DeviceOption = None,
) -> None:
    """Score new images with a saved detector: id, label, class, score and flag (1 = anomaly).

    Rows are written as they are scored, so memory does not grow with the number of images.
    """
    import os

    from reconad.data import open_collection
    from reconad.detector import Detector

    if engine not in ("local", "onnx", "ray"):
        raise ReconadError(f"unknown --engine {engine!r}; use local, onnx or ray")
    if maps is not None and engine == "ray":
        raise ReconadError("--maps is written by --engine local or onnx; drop --engine ray or "
                           "--maps")
    if detector.suffix.lower() == ".onnx" and engine != "onnx":
        raise ReconadError(f"{detector} is an ONNX graph; score it with --engine onnx")
    if address is not None and engine != "ray":
        raise ReconadError("--address is for --engine ray; add --engine ray or drop --address")
    if engine == "ray":
        from reconad.device import device_name

        device = device_name(device)  # checked here, resolved by each actor on its node
    # On Ray the actors choose the device on their own nodes; this driver may have no GPU.
    if engine == "onnx":
        det = _onnx_detector(detector, maps is not None)
    else:
        det = Detector.load(detector, device="cpu" if engine == "ray" else device)
    # Prepare images the way the training images were, unless told otherwise.
    trained = det.preprocessing_
    resize = resize or (tuple(trained["resize"]) if trained.get("resize") else None)
    collection = open_collection(input, det.image_shape_, resize=resize,
                                 grayscale=grayscale or bool(trained.get("grayscale")),
                                 label_column=label_column, data_dir=data_dir)
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    title = f"{Path(input).name}: highest and lowest scores"
    if engine == "ray":
        from reconad.engines import score_on_ray

        summary = score_on_ray(detector, collection, out, batch_size=batch_size,
                               workers=max(workers, 1), address=address, skip_bad=skip_bad,
                               gallery=gallery, gallery_k=gallery_k, title=title,
                               device=device)
    else:
        from reconad.engines import score_collection

        summary = score_collection(det, collection, out, batch_size=batch_size, workers=workers,
                                   skip_bad=skip_bad, gallery=gallery, gallery_k=gallery_k,
                                   title=title, maps=maps)
    for image_id, reason in summary.skipped:
        typer.echo(f"skipped {image_id}: {reason}", err=True)
    skipped = f", {len(summary.skipped)} unreadable skipped" if summary.skipped else ""
    typer.echo(f"{summary.n_flagged} of {summary.n_scored} images flagged (threshold "
               f"{det.threshold_:.6g}, {det.threshold_method_}){skipped}", err=True)
    if out is not None:
        typer.echo(f"scores written to {out}", err=True)
    if gallery is not None:
        typer.echo(f"gallery written to {gallery}", err=True)
    if maps is not None:
        typer.echo(f"anomaly maps written to {maps}", err=True)


def _onnx_detector(path: Path, maps: bool):
    """An exported graph to score with: ``path`` itself (.onnx), or a detector file exported
    to a temporary graph first."""
    import tempfile

    from reconad.detector import Detector
    from reconad.engines import OnnxDetector

    if path.suffix.lower() == ".onnx":
        return OnnxDetector(path)
    folder = Path(tempfile.mkdtemp(prefix="reconad-onnx-"))
    graph = Detector.load(path, device="cpu").to_onnx(folder / "detector.onnx",
                                                      maps=True if maps else None)
    return OnnxDetector(graph)


@app.command("export")
def export_command(
    detector: Annotated[Path, typer.Argument(help="A detector.safetensors file.")],
    out: Annotated[Path, typer.Option("--out", help="The file to write (detector.onnx).")],
    format: Annotated[str, typer.Option("--format", help="onnx (the only format).")] = "onnx",
    maps: Annotated[bool, typer.Option(help="Also output each image's anomaly map (map "
                                            "detectors always do).")] = False,
    opset: Annotated[int, typer.Option(min=16, help="ONNX opset.")] = 18,
) -> None:
    """Export a detector's whole score as one ONNX graph (pip install "reconad[onnx]").

    Input ``images``: float32 (N, C, H, W) in [0, 1] after the detector's resize/grayscale;
    outputs ``score`` (N,) and, for map detectors, ``map`` (N, H, W). Score it with
    ``reconad score FILE.onnx INPUT --engine onnx`` or any ONNX runtime.
    """
    from reconad.detector import Detector

    if format != "onnx":
        raise ReconadError(f"unknown --format {format!r}; the one format is onnx")
    written = Detector.load(detector, device="cpu").to_onnx(out, opset=opset,
                                                            maps=True if maps else None)
    typer.echo(f"ONNX graph written to {written}")


@app.command("serve")
def serve_command(
    detector: Annotated[Path, typer.Argument(help="A detector.safetensors file.")],
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every "
                                           "interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes (each with "
                                                     "its own model and batches).")] = 1,
    max_file_bytes: Annotated[int, typer.Option(min=1, help="Largest upload, in bytes "
                                                            "(counted while read).")]
    = 10 * 2**20,
    max_images: Annotated[int, typer.Option(min=1, help="Most images in one request.")] = 32,
    max_pixels: Annotated[int, typer.Option(min=1, help="Most pixels (width x height) of one "
                                                        "image; more is refused unread.")]
    = 2**22,
    batching: Annotated[bool, typer.Option(help="Score concurrent requests together in one "
                                                "model pass.")] = True,
    batch_wait_ms: Annotated[float, typer.Option(min=0, help="How long a batch waits for "
                                                             "more requests.")] = 5.0,
    resize: Annotated[tuple[int, int] | None, typer.Option(
        help="Resize uploads to H W (default: as the detector's training images).")] = None,
    grayscale: Annotated[bool, typer.Option(help="Convert colour uploads to grey.")] = False,
    torch_threads: Annotated[int | None, typer.Option(
        min=1, help="torch threads per worker process (default: the cores, shared out among "
                    "--workers; 1 on a machine busy with other work).")] = None,
    access_log: Annotated[bool, typer.Option(help="Log one line per request.")] = True,
    device: DeviceOption = None,
) -> None:
    """Serve a detector over HTTP: a page to drop images on (GET /), POST /score, /health, /info.

    Needs the serve extra (FastAPI, uvicorn, python-multipart). Every refused upload is a 4xx
    and one line of JSON.
    """
    from reconad.serve import serve

    typer.echo(f"serving {detector} on http://{host}:{port}/ (the page; API: POST /score, "
               "GET /health, GET /info); Ctrl-C stops", err=True)
    serve(detector, host=host, port=port, workers=workers, access_log=access_log,
          max_file_bytes=max_file_bytes, max_images=max_images, max_pixels=max_pixels,
          batching=batching, batch_wait_ms=batch_wait_ms, resize=resize, grayscale=grayscale,
          torch_threads=torch_threads, device=device)


@app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `reconad run`.")],
) -> None:
    """Redraw the plots and rebuild RUN_DIR/report.html from the run directory's files."""
    from reconad.report import write_report

    typer.echo(f"report written to {write_report(run_dir)}")


@app.command("compare")
def compare_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories to compare.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for compare.html/.png/.csv.")]
    = Path("compare"),
) -> None:
    """Headline metrics of several runs side by side: a table and a bar chart."""
    from reconad.report import compare_runs

    typer.echo(f"comparison written to {compare_runs(run_dirs, out)}")


@app.command("presets")
def presets_command() -> None:
    """List the presets, one line each."""
    from reconad.config import preset_description, preset_names

    _list(preset_names(), preset_description)


@app.command("sweep")
def sweep_command(
    source: Annotated[str, typer.Argument(help="A sweep preset (see `reconad sweeps`) or a "
                                               "sweep YAML file.")],
    quick: Annotated[bool, typer.Option(help="Use the sweep's reduced budget.")] = False,
    workers: Annotated[int, typer.Option(help="Trial processes on this machine.")] = 1,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL shared by workers on "
                                                     "several machines (default: SQLite in "
                                                     "the sweep directory).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Sweep directory (default "
                                             "sweeps/NAME).")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Search hyper-parameters (grid, one-at-a-time, random, TPE) ranked on the dev set."""
    from reconad.sweep import run_sweep

    result = run_sweep(source, quick=quick, workers=workers, storage=storage, out=out,
                       data_dir=data_dir)
    typer.echo(f"sweep written to {result.sweep_dir}")


@app.command("sweeps")
def sweeps_command() -> None:
    """List the sweep presets, one line each."""
    from reconad.sweep import sweep_preset_description, sweep_preset_names

    _list(sweep_preset_names(), sweep_preset_description)


def _list(names: list[str], describe) -> None:
    """One aligned line per name: the name and its description."""
    width = max(len(n) for n in names)
    for name in names:
        typer.echo(f"{name:<{width}}  {describe(name)}")


def main() -> None:
    """Console-script entry point: run the app, turning user errors into one line."""
    try:
        app()
    except ReconadError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
