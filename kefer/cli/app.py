"""The kefer app in the browser: kefer app [--checkpoint PATH] [--host 127.0.0.1] [--port 7860] [--share]

Webcam and photo upload, per-class similarity bars, a live embedding map, a prompt editor and
neutral calibration (see kefer/app/). By default the webcam streams the accurate model quantised to
int8 (assets/accurate-int8.onnx, ONNX Runtime) and uploaded photos use the accurate model itself
(ONNX Runtime fp32 where installed, else torch), each photo averaged with its mirror image;
--checkpoint uses one model for both. When no model is found it still starts, finds faces and says how to get one.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import torch  # noqa: E402

from ..app import build_demo  # noqa: E402
from ..io import log_to_console  # noqa: E402
from ..recognizer import load, resolve_checkpoint  # noqa: E402

log = logging.getLogger("kefer")


def model_device(name: str, device: str) -> str:
    """Where a model runs: an exported .onnx model (such as the default webcam model) on the CPU,
    through ONNX Runtime, whatever --device says; any other on --device."""
    return "cpu" if resolve_checkpoint(name).suffix == ".onnx" else device


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="kefer app", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="one model for webcam and photos: a .safetensors file, a run dir "
                                             "or an assets/ name")
    parser.add_argument("--stream-model", default="accurate-int8",
                        help="the webcam's model (default: assets/accurate-int8.onnx; 'fast' is the light one)")
    parser.add_argument("--photo-model", default="accurate", help="the photos' model (default: assets/accurate)")
    parser.add_argument("--no-photo-flip", dest="photo_flip", action="store_false",
                        help="score photos once, not averaged with their mirror image (half the cost)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--share", action="store_true", help="also serve on a public gradio.live link (off by default)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: two streams then share 2 cores without contention)")
    args = parser.parse_args(argv)
    log_to_console()
    torch.set_num_threads(args.threads)

    stream_name = args.checkpoint or args.stream_model
    photo_name = args.checkpoint or args.photo_model
    try:
        recognizer = load(stream_name, device=model_device(stream_name, args.device))
        photo_recognizer = load(photo_name, device=model_device(photo_name, args.device), flip=args.photo_flip)
        demo = build_demo(recognizer, device=args.device, photo_recognizer=photo_recognizer)
    except FileNotFoundError as err:
        if args.checkpoint:
            sys.exit(f"error: {err}")
        log.warning("%s", err)
        log.warning("Starting without a model: faces are found but not scored.")
        demo = build_demo(None, note=str(err), device=args.device)
    except (ValueError, ImportError) as err:
        sys.exit(f"error: {err}")
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size="50mb")
    return 0
