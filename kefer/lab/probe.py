"""How good are an encoder's frozen features for expressions and faces?

- FER+ linear probe: logistic regression on frozen features of a seeded subset of FER+ train
  (majority labels, 8 classes), accuracy on a seeded subset of FER+ test.
- CK+ same-subject verification: ROC AUC of the cosine similarity of two images' features for
  "same subject" against "different subjects", over all pairs of CK+ images.

    kefer lab probe --out runs/probe.json
    kefer lab probe --out runs/probe.json --configs facenet-casia@112 --train 500 --test 500 --ckplus 300
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..train.data import default_root, ferplus, open_rgb, read_folder, sample
from ..preprocess import eval_transform
from ..io import log_to_console
from ..models import registry
from ..models.encoders import FACENET_MEAN, FACENET_STD

log = logging.getLogger(__name__)

DEFAULT_CONFIGS = ["facenet-casia@160", "facenet-casia@112", "facenet-casia@96", "inception-resnet-v1@112",
                   "efficientnet-lite0-imagenet@224"]


@torch.no_grad()
def extract(encoder: torch.nn.Module, paths: list[Path], img_size: int, batch_size: int = 50) -> np.ndarray:
    """Frozen features [N, F] of N image files, resized to img_size and normalised with ``encoder.mean``/``.std``."""
    encoder.eval()
    transform = eval_transform(img_size, encoder.mean, encoder.std)
    feats = []
    for i in range(0, len(paths), batch_size):
        feats.append(encoder(torch.stack([transform(open_rgb(p)) for p in paths[i:i + batch_size]])))
    return torch.cat(feats).numpy()


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 cs: tuple = (0.01, 0.1, 1.0), seed: int = 0) -> dict:
    """Test accuracy of a standardised logistic regression on features [N, F]; its inverse
    regularisation C is picked on a seeded 25% hold-out of train, then refit on all of train."""
    def fit(x, y, c):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000)).fit(x, y)

    fit_x, val_x, fit_y, val_y = train_test_split(train_x, train_y, test_size=0.25,
                                                  random_state=seed)
    best = max(cs, key=lambda c: fit(fit_x, fit_y, c).score(val_x, val_y))
    return {"acc": float(fit(train_x, train_y, best).score(test_x, test_y)), "C": best}


def same_subject_auc(features: np.ndarray, subjects: list[str]) -> float:
    """ROC AUC of cosine similarity [N, F] for same- vs different-subject pairs (all i < j)."""
    f = features / np.linalg.norm(features, axis=1, keepdims=True)
    i, j = np.triu_indices(len(f), k=1)
    subjects = np.asarray(subjects)
    return float(roc_auc_score(subjects[i] == subjects[j], (f @ f.T)[i, j]))


def ckplus_subjects(paths: list[Path]) -> list[str]:
    """CK+ file names start with the subject id: ``S010_004_00000019.png`` -> ``S010``."""
    return [p.name.split("_")[0] for p in paths]


class FaceNetBottleneck(torch.nn.Module):
    """FaceNet's own 512-d identity embedding (pool -> bottleneck -> BatchNorm), to compare with the
    1792-d pooled features that ``facenet-casia`` fine-tunes from."""

    num_features = 512

    def __init__(self):
        super().__init__()
        from facenet_pytorch import InceptionResnetV1

        self.net = InceptionResnetV1(classify=False).eval()
        self.net.load_state_dict(registry.converted_state_dict("facenet-casia"))
        self.mean, self.std = FACENET_MEAN, FACENET_STD

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def run_config(name: str, img_size: int, data: dict, seed: int) -> dict:
    """Probe accuracy and CK+ AUC of one encoder at one input size (``facenet-casia:bottleneck``:
    FaceNet's 512-d embedding instead of its pooled features)."""
    torch.manual_seed(seed)  # the random-init baselines
    encoder = FaceNetBottleneck() if name == "facenet-casia:bottleneck" else registry.build_encoder(name, img_size)
    start = time.time()
    feats = {split: extract(encoder, paths, img_size) for split, (paths, _) in data.items()}
    seconds = time.time() - start
    fit = linear_probe(feats["train"], data["train"][1], feats["test"], data["test"][1], seed=seed)
    auc = same_subject_auc(feats["ckplus"], ckplus_subjects(data["ckplus"][0]))
    n_images = sum(len(paths) for paths, _ in data.values())
    return {"encoder": name, "img_size": img_size, "pretrained": registry.is_pretrained(name.split(":")[0]),
            "num_features": encoder.num_features, "ferplus_probe_acc": round(fit["acc"], 4), "probe_C": fit["C"],
            "ckplus_same_subject_auc": round(auc, 4), "extract_img_per_s": round(n_images / seconds, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kefer lab probe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON file for the results")
    parser.add_argument("--data-root", help="folder holding ferplus/ and ckplus/ (default: $KEFER_DATA or ../shared/data)")
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="ENCODER@IMG_SIZE ...")
    parser.add_argument("--train", type=int, default=2000, help="FER+ train images for the probe")
    parser.add_argument("--test", type=int, default=1500, help="FER+ test images")
    parser.add_argument("--ckplus", type=int, help="CK+ images for the AUC (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (on a shared machine 1 can be far faster than 2)")
    args = parser.parse_args(argv)
    log_to_console()
    torch.set_num_threads(args.threads)

    ferplus_root = Path(args.data_root) / "ferplus" if args.data_root else default_root("ferplus")
    ckplus_root = Path(args.data_root) / "ckplus" if args.data_root else default_root("ckplus")
    data = {}
    for split, n in [("train", args.train), ("test", args.test)]:
        samples = sample(ferplus.read_split(ferplus_root, split), n, args.seed)
        data[split] = ([p for p, _ in samples], np.array([y for _, y in samples]))
    ck_samples = sample(read_folder(ckplus_root)[0], args.ckplus, args.seed)
    data["ckplus"] = ([p for p, _ in ck_samples], None)

    results = []
    for config in args.configs:
        name, size = config.rsplit("@", 1)
        results.append(run_config(name, int(size), data, args.seed))
        log.info(json.dumps(results[-1]))
    report = {"results": results, "ferplus_train": len(data["train"][0]), "ferplus_test": len(data["test"][0]),
              "ckplus_images": len(ck_samples), "seed": args.seed, "torch_threads": args.threads,
              "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                         f"torch {torch.__version__}"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    log.info(f"wrote {args.out}")

