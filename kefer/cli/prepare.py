"""``kefer prepare``: dataset downloads -> the layouts the loaders read (``kefer.train.data.prepare``)."""
from __future__ import annotations

import argparse
import json
import sys

from ..train.data.prepare import __doc__ as PREPARE_DOC, prepare_ckplus, prepare_ferplus, prepare_rafdb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="kefer prepare", description=PREPARE_DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="dataset", required=True)
    fer = sub.add_parser("ferplus", help="fer2013.csv + fer2013new.csv -> the official FER+ layout")
    fer.add_argument("--fer2013-csv", required=True, help="Kaggle's fer2013.csv (emotion,pixels,Usage)")
    fer.add_argument("--ferplus-csv", required=True, help="Microsoft's fer2013new.csv (the votes)")
    fer.add_argument("--out", required=True, help="folder to write FER2013{Train,Valid,Test}/ into")
    raf = sub.add_parser("rafdb", help="RAF-DB Image/original photos -> MTCNN-aligned crops")
    raf.add_argument("--root", required=True, help="the RAF-DB 'basic' folder")
    raf.add_argument("--out", required=True, help="folder to write the aligned RAF-DB root into")
    raf.add_argument("--size", type=int, default=224, help="side of the square crops in pixels")
    raf.add_argument("--device", default="cpu")
    ck = sub.add_parser("ckplus", help="CK+ release frames -> MTCNN-aligned crops of the protocol's frames")
    ck.add_argument("--root", required=True, help="the folder holding cohn-kanade-images/ and Emotion/")
    ck.add_argument("--out", required=True, help="folder to write the aligned CK+ root into")
    ck.add_argument("--size", type=int, default=224, help="side of the square crops in pixels")
    ck.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    try:
        if args.dataset == "ferplus":
            print(json.dumps(prepare_ferplus(args.fer2013_csv, args.ferplus_csv, args.out), indent=2))
        else:
            align = prepare_rafdb if args.dataset == "rafdb" else prepare_ckplus
            report = align(args.root, args.out, args.size, args.device)
            print(f"aligned {report['images']} images into {args.out}; "
                  f"{len(report['no_face_centre_crop'])} without a face were centre-cropped")
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0

