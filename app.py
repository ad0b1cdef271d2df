"""The kefer demo app: python app.py [--checkpoint PATH] [--host 127.0.0.1] [--port 7860] [--device cpu] [--share]

Webcam and photo upload, per-class similarity bars, a live embedding map, a prompt editor and
neutral calibration (see kefer/demo.py). Without --checkpoint it uses the default model in
assets/; when there is none it still starts, finds faces and says how to get a model.
"""
import argparse
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import torch  # noqa: E402

import kefer  # noqa: E402
from kefer.demo import build_demo  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description="kefer demo app (Gradio)")
    parser.add_argument("--checkpoint", help="a .safetensors checkpoint or a run dir (default: the model in assets/)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--share", action="store_true", help="also serve on a public gradio.live link (off by default)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: two streams then share 2 cores without contention)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    try:
        recognizer = kefer.load(args.checkpoint, device=args.device)
        note = f"Model: {args.checkpoint or 'default model in assets/'} ({len(recognizer.classes)} classes)."
    except FileNotFoundError as err:
        if args.checkpoint:
            sys.exit(f"error: {err}")
        recognizer, note = None, str(err)
        print(f"[kefer] {err}\n[kefer] Starting without a model: faces are found but not scored.")
    except ValueError as err:
        sys.exit(f"error: {err}")
    build_demo(recognizer, note=note, device=args.device).launch(
        server_name=args.host, server_port=args.port, share=args.share, max_file_size="50mb")


if __name__ == "__main__":
    main()
