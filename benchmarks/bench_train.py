"""Training and inference throughput of a preset on real FER+ batches, and the FER+ epoch time
it implies (25,045 training + 3,191 validation images).

    python benchmarks/bench_train.py --preset cpu --steps 20
    python benchmarks/bench_train.py --preset paper-r18 --encoder facenet-casia --img-size 112
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
import sys

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kefer.train.config import preset
from kefer.train.data import build_dataset
from kefer.preprocess import eval_transform
from kefer.train.augment import train_transform
from kefer.train.losses import LossConfig
from kefer.models.network import KEFERModel
from kefer.models.factory import create_encoder
from kefer.train.distributed import resolve_device  # noqa: E402
from kefer.train.loop import infer, make_loader, train_step  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--data-root")
    p.add_argument("--device", default="auto")
    p.add_argument("--encoder", help="override the preset's encoder (any timm or kefer pretrained name)")
    p.add_argument("--img-size", type=int, help="override the preset's input size")
    p.add_argument("--batch-size", type=int, help="override the preset's batch size")
    args = p.parse_args()
    overrides = {"encoder": args.encoder, "img_size": args.img_size, "batch_size": args.batch_size}
    cfg = preset(args.preset, **{k: v for k, v in overrides.items() if v is not None})
    device = resolve_device(args.device)
    encoder = create_encoder(cfg.encoder, cfg.img_size, **cfg.encoder_kwargs)
    if cfg.compile:
        encoder.compile()
    n = cfg.batch_size * (args.steps + 2)
    data = build_dataset("ferplus", args.data_root, "train", train_transform(cfg.img_size, encoder.mean, encoder.std),
                         max_samples=n)
    text = torch.nn.functional.normalize(torch.randn(8, 384), dim=-1)
    model = KEFERModel(encoder, 8, text).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(enabled=False)
    loss_cfg = LossConfig(cfg.loss_terms)
    times = []
    model.train()
    t = time.perf_counter()
    for i, (x, y) in enumerate(make_loader(data, cfg.batch_size, True, device, cfg.workers)):
        train_step(model, x, y, opt, scaler, loss_cfg, 0, device, cfg.amp)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:  # warm-up steps excluded
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
    train_ips = cfg.batch_size / statistics.median(times)
    data.transform = eval_transform(cfg.img_size, encoder.mean, encoder.std)
    t = time.perf_counter()
    infer(model, make_loader(data, cfg.batch_size * 2, False, device, cfg.workers), device, cfg.amp)
    infer_ips = len(data) / (time.perf_counter() - t)
    epoch_s = 25045 / train_ips + 3191 / infer_ips
    print(f"hardware: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"device {device}" + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""))
    print(f"preset {args.preset}: {cfg.encoder} @ {cfg.img_size}px, batch {cfg.batch_size}"
          + (", torch.compile" if cfg.compile else ""))
    print(f"train: {train_ips:.0f} img/s (median of {len(times)} steps, data loading and augmentation included)")
    print(f"inference: {infer_ips:.0f} img/s (data loading included)")
    print(f"estimated FER+ epoch: {epoch_s:.0f} s; {cfg.epochs} epochs: {cfg.epochs * epoch_s / 60:.0f} min")


if __name__ == "__main__":
    main()
